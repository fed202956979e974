"""Per-tile scores (e.g. MIL attention) painted over the slide thumbnail."""

from __future__ import annotations

import enum

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy.stats import rankdata


class ScoreScaling(enum.Enum):
    """How raw scores become colours.

    RANK maps each score to its percentile among the slide's tiles (CLAM's default): attention logits are
    heavy-tailed, and on a linear scale a handful of tiles would take all the colour. MINMAX keeps the linear scale.
    """

    RANK = "rank"
    MINMAX = "minmax"


def scale_scores(scores: np.ndarray, scaling: ScoreScaling = ScoreScaling.RANK) -> np.ndarray:
    """(N,) scores -> (N,) values in [0, 1]. NaN scores (e.g. padded instances) stay NaN."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    out = np.full_like(scores, np.nan)
    valid = np.isfinite(scores)
    if not valid.any():
        return out
    values = scores[valid]
    if scaling is ScoreScaling.RANK:
        out[valid] = (rankdata(values) - 1) / max(len(values) - 1, 1)
    else:
        span = values.max() - values.min()
        out[valid] = (values - values.min()) / span if span > 0 else 0.5
    return out


def render_heatmap(thumbnail: Image.Image, coords: np.ndarray, scores: np.ndarray, patch_size_level0: int,
                   level0_dimensions: tuple[int, int], *, scaling: ScoreScaling = ScoreScaling.RANK,
                   colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
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

    Returns:
        RGB image the size of ``thumbnail``.
    """
    coords = np.asarray(coords)
    if len(coords) != len(np.asarray(scores).reshape(-1)):
        raise ValueError(f"{len(coords)} tile coordinates but {np.asarray(scores).size} scores")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values = scale_scores(scores, scaling)
    base = np.asarray(thumbnail.convert("RGB"), dtype=np.float32) / 255.0
    height, width = base.shape[:2]
    scale_x, scale_y = width / level0_dimensions[0], height / level0_dimensions[1]
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    for (x, y), value in zip(coords, values):
        if not np.isfinite(value):
            continue
        x0, y0 = int(np.floor(x * scale_x)), int(np.floor(y * scale_y))
        x1 = max(x0 + 1, int(np.ceil((x + patch_size_level0) * scale_x)))
        y1 = max(y0 + 1, int(np.ceil((y + patch_size_level0) * scale_y)))
        total[y0:y1, x0:x1] += value
        count[y0:y1, x0:x1] += 1
    covered = count > 0
    mean = np.divide(total, count, out=np.zeros_like(total), where=covered)
    colours = colormaps[colormap](mean)[..., :3].astype(np.float32)
    blended = np.where(covered[..., None], (1 - alpha) * base + alpha * colours, base)
    return Image.fromarray((blended * 255).round().clip(0, 255).astype(np.uint8))
