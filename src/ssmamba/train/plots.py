"""PNG figures written during training: loss/metric curves and MAMIM reconstruction grids.

Drawn on ``matplotlib.figure.Figure`` objects (rendered by Agg when saved), never through pyplot: no window, and
importing this module selects no matplotlib backend for the rest of the process.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

__all__ = ["plot_curves", "save_reconstruction_grid"]


def plot_curves(history: list[dict], path: Path, x: str = "step", keys: tuple[str, ...] = ("loss",),
                title: str = "") -> Path:
    """One panel per key of ``history`` rows that has values, against ``x``."""
    keys = [k for k in keys if any(k in row for row in history)]
    fig = Figure(figsize=(4.5 * max(1, len(keys)), 3.2))
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [row for row in history if key in row]
        ax.plot([row[x] for row in rows], [row[key] for row in rows], marker="." if len(rows) < 30 else None)
        ax.set_xlabel(x)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _to_image(x: torch.Tensor, mean, std):
    """Normalised ``(3, H, W)`` -> ``(H, W, 3)`` in [0, 1]."""
    mean = torch.tensor(mean).view(3, 1, 1)
    std = torch.tensor(std).view(3, 1, 1)
    return (x.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def save_reconstruction_grid(images: torch.Tensor, masked: torch.Tensor, reconstruction: torch.Tensor, path: Path,
                             mean, std, title: str = "") -> Path:
    """Rows of original / masked / reconstruction for up to 8 images (each ``(B, 3, H, W)``, normalised)."""
    n = min(8, images.shape[0])
    fig = Figure(figsize=(1.6 * n, 5.0))
    axes = fig.subplots(3, n, squeeze=False)
    for row, (name, batch) in enumerate([("original", images), ("masked", masked), ("reconstruction", reconstruction)]):
        for i in range(n):
            axes[row][i].imshow(_to_image(batch[i], mean, std))
            axes[row][i].set_xticks([])
            axes[row][i].set_yticks([])
        axes[row][0].set_ylabel(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
