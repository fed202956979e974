from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from ssmamba.wsi.heatmap import ScoreScaling, render_heatmap, scale_scores


def test_rank_scaling_spreads_heavy_tailed_scores_evenly():
    scaled = scale_scores(np.array([0.0, 0.1, 0.2, 100.0]), ScoreScaling.RANK)
    np.testing.assert_allclose(scaled, [0, 1 / 3, 2 / 3, 1])
    linear = scale_scores(np.array([0.0, 0.1, 0.2, 100.0]), ScoreScaling.MINMAX)
    assert linear[2] < 0.01 and linear[3] == 1.0


def test_nan_scores_stay_unpainted():
    scaled = scale_scores(np.array([1.0, np.nan, 3.0]))
    assert np.isnan(scaled[1]) and scaled[0] == 0 and scaled[2] == 1


def test_heatmap_colours_tiles_by_score_and_leaves_the_rest():
    thumbnail = Image.new("RGB", (100, 50), (255, 255, 255))
    # level 0 is 1000 x 500 px: tiles of 100 px become 10 px squares on the thumbnail
    coords = np.array([[0, 0], [500, 200]])
    image = np.asarray(render_heatmap(thumbnail, coords, np.array([0.0, 1.0]), 100, (1000, 500), alpha=1.0))
    low = np.round(np.asarray(colormaps["jet"](0.0)[:3]) * 255)
    high = np.round(np.asarray(colormaps["jet"](1.0)[:3]) * 255)
    np.testing.assert_array_equal(image[5, 5], low)
    np.testing.assert_array_equal(image[25, 55], high)
    assert (image[40:, 80:] == 255).all()  # no tile there: the thumbnail as it was


def test_heatmap_checks_lengths():
    with pytest.raises(ValueError, match="2 tile coordinates but 3 scores"):
        render_heatmap(Image.new("RGB", (10, 10)), np.zeros((2, 2)), np.zeros(3), 10, (100, 100))
