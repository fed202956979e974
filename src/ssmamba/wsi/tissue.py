"""Tissue detection on a slide thumbnail: Otsu on saturation, then morphological clean-up.

H&E-stained tissue is coloured while glass is white or grey, so saturation separates them better than brightness
(which also flags pale fat and misses dark pen marks less reliably). Otsu picks the threshold per slide, which
adapts to staining strength; a floor stops it from splitting pure glass noise into "tissue" on empty slides.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.color import rgb2hsv
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects

from ssmamba.wsi.config import TissueMaskConfig


def tissue_mask(thumbnail: Image.Image | np.ndarray, config: TissueMaskConfig = TissueMaskConfig()) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Args:
        thumbnail: (H, W, 3) uint8 array or RGB PIL image.
        config: thresholds, see :class:`TissueMaskConfig`.

    Returns:
        (H, W) bool array, True on tissue.
    """
    rgb = np.asarray(thumbnail.convert("RGB") if isinstance(thumbnail, Image.Image) else thumbnail)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"tissue_mask expects an (H, W, 3) RGB image, got shape {rgb.shape}")
    hsv = rgb2hsv(rgb)
    saturation = gaussian(hsv[..., 1], sigma=config.blur_sigma) if config.blur_sigma > 0 else hsv[..., 1]
    threshold = config.saturation_threshold
    if threshold is None:
        # Otsu needs two populations; a uniform image has one and Otsu's answer is meaningless there.
        threshold = threshold_otsu(saturation) if np.ptp(saturation) > 1e-6 else 1.0
    mask = saturation > max(threshold, config.min_saturation)
    if config.max_value_dark > 0:
        mask &= hsv[..., 2] > config.max_value_dark
    if config.closing_radius > 0:
        mask = closing(mask, disk(config.closing_radius))
    if config.min_object_area > 0:
        mask = remove_small_objects(mask, max_size=config.min_object_area - 1)
    if config.max_hole_area > 0:
        mask = remove_small_holes(mask, max_size=config.max_hole_area)
    return mask
