"""Helpers for the data tests: images whose pixels encode their own position, noise patches, CSV writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def position_image(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 whose pixel (y, x) is (x, y, 7): a crop read from the wrong place cannot match."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)


def noise_image(rng: np.random.Generator, size: int, tint: tuple[int, int, int]) -> np.ndarray:
    return np.clip(rng.normal(tint, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def truncated_png(path: Path, rng: np.random.Generator) -> Path:
    """A PNG cut in half: its header parses, its pixels do not."""
    Image.fromarray(noise_image(rng, 32, (128, 128, 128))).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_manifest(path: Path, rows: list[tuple], header: tuple[str, ...]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path
