"""Per-tile scores (MIL attention, given scores, or a label-free feature view) painted over the slide thumbnail.

The look follows CLAM's heatmaps: scores as percentiles among the slide's tiles (or raw), overlapping tiles
averaged, an optional Gaussian smoothing of the score map that never spills onto glass, and a colour bar that
says what the colours mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from ssmamba.wsi.config import ScoreScaling


def scale_scores(scores: np.ndarray, scaling: ScoreScaling = ScoreScaling.PERCENTILE) -> np.ndarray:
    """(N,) scores -> (N,) values in [0, 1]. NaN scores (e.g. padded instances) stay NaN."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    out = np.full_like(scores, np.nan)
    valid = np.isfinite(scores)
    if not valid.any():
        return out
    values = scores[valid]
    if scaling is ScoreScaling.PERCENTILE:
        out[valid] = (rankdata(values) - 1) / max(len(values) - 1, 1)
    else:
        span = values.max() - values.min()
        out[valid] = (values - values.min()) / span if span > 0 else 0.5
    return out


def first_principal_component(features: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-tile score along the first principal component of (N, D) features, and its share of the variance.

    A label-free view of a slide: tiles that look alike get alike colours. The sign of a principal component is
    arbitrary; it is fixed so that the loading largest in absolute value is positive (scikit-learn's rule).
    """
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        return np.zeros(len(features)), 0.0
    centred = features - features.mean(0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    component = components[0] * np.sign(components[0][np.argmax(np.abs(components[0]))])
    total = float((singular ** 2).sum())
    return centred @ component, float(singular[0] ** 2 / total) if total > 0 else 0.0


def _score_maps(shape: tuple[int, int], coords: np.ndarray, values: np.ndarray, patch_size_level0: int,
                scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of tile values and number of tiles over every thumbnail pixel (overlapping tiles add up)."""
    total, count = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
    scale_x, scale_y = scale
    for (x, y), value in zip(coords, values):
        if not np.isfinite(value):
            continue
        x0, y0 = int(np.floor(x * scale_x)), int(np.floor(y * scale_y))
        x1 = max(x0 + 1, int(np.ceil((x + patch_size_level0) * scale_x)))
        y1 = max(y0 + 1, int(np.ceil((y + patch_size_level0) * scale_y)))
        total[y0:y1, x0:x1] += value
        count[y0:y1, x0:x1] += 1
    return total, count


def render_heatmap(thumbnail: Image.Image, coords: np.ndarray, scores: np.ndarray, patch_size_level0: int,
                   level0_dimensions: tuple[int, int], *, scaling: ScoreScaling = ScoreScaling.PERCENTILE,
                   colormap: str = "jet", alpha: float = 0.5, smooth: float = 0.0) -> Image.Image:
    """Blend coloured tile scores over ``thumbnail``.

    Args:
        thumbnail: RGB image of the whole slide at any size.
        coords: (N, 2) top-left of each tile in level-0 pixels.
        scores: (N,) one score per tile; overlapping tiles are averaged.
        patch_size_level0: tile side in level-0 pixels.
        level0_dimensions: (width, height) of level 0.
        scaling: how scores map to the colour range.
        colormap: a matplotlib colormap name.
        alpha: opacity of the colour over tissue; regions without tiles show the plain thumbnail.
        smooth: standard deviation of a Gaussian smoothing of the score map, in tiles (0: none). Smoothing is
            normalised by the smoothed tile coverage, so glass next to tissue neither gets colour nor pulls the
            scores at the tissue's edge down.

    Returns:
        RGB image the size of ``thumbnail``.
    """
    coords = np.asarray(coords)
    if len(coords) != len(np.asarray(scores).reshape(-1)):
        raise ValueError(f"{len(coords)} tile coordinates but {np.asarray(scores).size} scores")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0 tiles, got {smooth}")
    base = np.asarray(thumbnail.convert("RGB"), dtype=np.float32) / 255.0
    height, width = base.shape[:2]
    scale = (width / level0_dimensions[0], height / level0_dimensions[1])
    total, count = _score_maps((height, width), coords, scale_scores(scores, scaling), patch_size_level0, scale)
    covered = count > 0
    if smooth > 0:
        sigma = smooth * patch_size_level0 * np.asarray(scale[::-1])  # (rows, columns) in thumbnail pixels
        total, count = gaussian_filter(total, sigma), gaussian_filter(count, sigma)
    mean = np.divide(total, count, out=np.zeros_like(total), where=covered & (count > 1e-12))
    colours = colormaps[colormap](mean.clip(0, 1))[..., :3].astype(np.float32)
    blended = np.where(covered[..., None], (1 - alpha) * base + alpha * colours, base)
    return Image.fromarray((blended * 255).round().clip(0, 255).astype(np.uint8))


@dataclass(frozen=True)
class ColourBar:
    """What the colours of a heatmap mean: the score's name and the range the colour map spans."""

    label: str
    low: float
    high: float
    colormap: str = "jet"

    @classmethod
    def for_scores(cls, scores: np.ndarray, scaling: ScoreScaling, score_name: str,
                   colormap: str = "jet") -> "ColourBar":
        """Percentiles 0-100 for PERCENTILE scaling; the slide's lowest to highest raw score for RAW."""
        if scaling is ScoreScaling.PERCENTILE:
            return cls(f"{score_name}\n(percentile among the slide's tiles)", 0.0, 100.0, colormap)
        finite = np.asarray(scores, np.float64)[np.isfinite(scores)]
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        return cls(f"{score_name}\n(raw, linear)", low, high if high > low else low + 1.0, colormap)


def add_colour_bar(image: Image.Image, bar: ColourBar, width: int = 150) -> Image.Image:
    """``image`` with a labelled vertical colour bar ``width`` pixels wide on its right."""
    dpi = 100
    figure = Figure(figsize=(width / dpi, image.height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.12, 0.08, 0.14, 0.84))
    mappable = ScalarMappable(norm=Normalize(bar.low, bar.high), cmap=colormaps[bar.colormap])
    figure.colorbar(mappable, cax=axes, label=bar.label)
    axes.yaxis.label.set_size(8)
    axes.tick_params(labelsize=7)
    canvas.draw()
    strip = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    combined = Image.new("RGB", (image.width + strip.width, image.height), "white")
    combined.paste(image.convert("RGB"), (0, 0))
    combined.paste(strip, (image.width, 0))
    return combined
