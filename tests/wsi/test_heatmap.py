from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from ssmamba.wsi.config import ScoreScaling
from ssmamba.wsi.heatmap import (ColourBar, add_colour_bar, first_principal_component,
                                 render_heatmap, scale_scores)


def test_rank_scaling_spreads_heavy_tailed_scores_evenly():
    scaled = scale_scores(np.array([0.0, 0.1, 0.2, 100.0]), ScoreScaling.PERCENTILE)
    np.testing.assert_allclose(scaled, [0, 1 / 3, 2 / 3, 1])
    linear = scale_scores(np.array([0.0, 0.1, 0.2, 100.0]), ScoreScaling.RAW)
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


def test_old_scaling_names_still_work():
    assert ScoreScaling("rank") is ScoreScaling.PERCENTILE and ScoreScaling("minmax") is ScoreScaling.RAW


def _column_grid(values_per_column, rows=4, tile=100):
    """A rows x len(values) grid of level-0 tiles of ``tile`` px, scored by column."""
    coords = np.array([[c * tile, r * tile] for r in range(rows) for c in range(len(values_per_column))])
    return coords, np.array([values_per_column[c] for r in range(rows) for c in range(len(values_per_column))])


def test_smoothing_blends_neighbouring_tiles_but_never_paints_glass():
    # 4 x 4 tiles of 100 px on a 1000 x 500 px slide drawn at 1/10: columns scored 0, 0, 1, 1 (raw)
    coords, scores = _column_grid([0.0, 0.0, 1.0, 1.0])
    thumbnail = Image.new("RGB", (100, 50), (255, 255, 255))
    gray = colormaps["gray"]
    sharp = np.asarray(render_heatmap(thumbnail, coords, scores, 100, (1000, 500), scaling=ScoreScaling.RAW,
                                      colormap="gray", alpha=1.0))[..., 0]
    smooth = np.asarray(render_heatmap(thumbnail, coords, scores, 100, (1000, 500), scaling=ScoreScaling.RAW,
                                       colormap="gray", alpha=1.0, smooth=1.0))[..., 0]
    assert sharp[20, 19] == 0 and sharp[20, 20] == 255  # a hard edge between columns 1 and 2
    assert 30 < smooth[20, 19] < 128 < smooth[20, 20] < 225  # a gradient across it
    assert smooth[20, 1] < 40 and smooth[20, 38] > 215  # far from the edge the scores stay
    assert (smooth[:, 40:] == 255).all() and (smooth[40:, :] == 255).all()  # glass stays as it was
    assert np.round(gray(0.0)[0] * 255) == 0


def test_overlapping_tiles_are_averaged():
    thumbnail = Image.new("RGB", (30, 10), (255, 255, 255))
    coords = np.array([[0, 0], [100, 0]])  # 200 px tiles, stride 100: they share level-0 x 100-200
    image = np.asarray(render_heatmap(thumbnail, coords, np.array([0.0, 1.0]), 200, (300, 100),
                                      scaling=ScoreScaling.RAW, colormap="gray", alpha=1.0))[..., 0]
    assert image[5, 5] == 0 and image[5, 25] == 255 and image[5, 15] == 128


def test_colour_bar_says_what_the_colours_mean():
    bar = ColourBar.for_scores(np.array([-2.0, 3.0, np.nan]), ScoreScaling.RAW, "attention")
    assert (bar.low, bar.high) == (-2.0, 3.0) and "raw" in bar.label
    percentile = ColourBar.for_scores(np.array([-2.0, 3.0]), ScoreScaling.PERCENTILE, "attention")
    assert (percentile.low, percentile.high) == (0.0, 100.0) and "percentile" in percentile.label
    image = Image.new("RGB", (200, 300), (255, 255, 255))
    with_bar = add_colour_bar(image, percentile, width=150)
    assert with_bar.size == (350, 300)
    strip = np.asarray(with_bar)[:, 200:].reshape(-1, 3).astype(int)
    for value in (0.0, 1.0):  # both ends of the colour map are drawn
        colour = np.round(np.asarray(colormaps["jet"](value)[:3]) * 255)
        assert (np.abs(strip - colour).sum(1) <= 6).any()


def test_first_principal_component_finds_the_direction_tiles_differ_in():
    rng = np.random.default_rng(0)
    direction = np.zeros(8)
    direction[2] = -1.0  # the largest loading is negative: the sign rule must flip it
    positions = np.linspace(-3, 3, 50)
    features = positions[:, None] * direction + rng.normal(0, 0.05, (50, 8)) + 7.0
    scores, share = first_principal_component(features)
    assert share > 0.95
    assert np.corrcoef(scores, -positions)[0, 1] > 0.99  # loading made positive: score = -position
    np.testing.assert_allclose(scores.mean(), 0, atol=1e-9)
