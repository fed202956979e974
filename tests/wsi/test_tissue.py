from __future__ import annotations

import numpy as np
import pytest

from ssmamba.wsi.config import TissueMaskConfig
from ssmamba.wsi.tissue import tissue_mask


def test_mask_finds_the_stained_region_on_glass(make_blob_image):
    box = (40, 30, 160, 110)
    mask = tissue_mask(make_blob_image(200, 150, box))
    truth = np.zeros((150, 200), bool)
    truth[30:110, 40:160] = True
    intersection_over_union = (mask & truth).sum() / (mask | truth).sum()
    assert intersection_over_union > 0.95


def test_blank_glass_has_no_tissue_even_with_noise():
    rng = np.random.default_rng(1)
    glass = (240 + rng.normal(0, 3, (100, 100, 3))).clip(0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()


def test_small_debris_is_dropped_and_dark_borders_ignored(make_blob_image):
    image = make_blob_image(200, 150, (40, 30, 160, 110))
    image[5:8, 5:8] = (150, 40, 120)  # a 9-pixel speck of stain
    image[:, 195:] = 0  # a black scanner border
    mask = tissue_mask(image, TissueMaskConfig(min_object_area=64))
    assert not mask[5:8, 5:8].any()
    assert not mask[:, 195:].any()


def test_fixed_threshold_overrides_otsu(make_blob_image):
    image = make_blob_image(100, 100, (20, 20, 80, 80))
    assert not tissue_mask(image, TissueMaskConfig(saturation_threshold=0.99)).any()


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="RGB"):
        tissue_mask(np.zeros((10, 10)))
