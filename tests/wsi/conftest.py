"""Slides made inside the tests: pyramidal TIFFs whose pixels encode their own level-0 position, blob "tissue"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn


def position_image(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 whose pixel (y, x) says where it is: R = x mod 251, G = y mod 241, B = x // 251 * 16 + y // 241.

    Prime moduli make every pixel of a few-thousand-pixel image unique, so a tile read from the wrong place or
    level cannot match by accident.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx % 251, yy % 241, (xx // 251) * 16 + yy // 241], axis=-1).astype(np.uint8)


def write_pyramid(path: Path, image: np.ndarray, mpp: float, downsamples=(1, 2, 4)) -> Path:
    """Tiled pyramidal TIFF, one page per level (subsampled, so level k holds level-0 pixels k*i exactly),
    resolution in pixels per centimetre."""
    with tifffile.TiffWriter(path) as tiff:
        for index, factor in enumerate(downsamples):
            tiff.write(np.ascontiguousarray(image[::factor, ::factor]), tile=(128, 128), photometric="rgb",
                       compression="zlib", resolution=(1e4 / (mpp * factor), 1e4 / (mpp * factor)),
                       resolutionunit="CENTIMETER", subfiletype=0 if index == 0 else 1)
    return path


def blob_image(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """White glass with an H&E-pink textured rectangle of "tissue" at box = (x0, y0, x1, y1)."""
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), 245, np.uint8)
    x0, y0, x1, y1 = box
    tissue = np.array([200, 110, 170]) + rng.normal(0, 12, (y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = tissue.clip(0, 255).astype(np.uint8)
    return image


@pytest.fixture
def position_slide(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 3-level 0.25 µm/px pyramid of 1536 x 1024 px and its level-0 pixels."""
    image = position_image(1536, 1024)
    return write_pyramid(tmp_path / "position.tif", image, mpp=0.25), image


@pytest.fixture
def blob_slide(tmp_path: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """A 0.5 µm/px pyramid of 2048 x 1536 px with tissue only in one rectangle."""
    box = (512, 256, 1536, 1024)
    return write_pyramid(tmp_path / "blob.tif", blob_image(2048, 1536, box), mpp=0.5), box


@pytest.fixture
def cmu_slide(shared_data: Path) -> Path:
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


class MeanColourEncoder(nn.Module):
    """Stand-in encoder: per-channel mean and std of the normalised tile, (B, 3, H, W) -> (B, 6)."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


@pytest.fixture
def stand_in_encoder():
    from ssmamba.models.encoders import encoder_from_module

    return encoder_from_module(MeanColourEncoder(), "mean-colour", input_size=32)


@pytest.fixture
def make_blob_image():
    """The :func:`blob_image` factory, for tests that build their own images."""
    return blob_image


@pytest.fixture
def make_pyramid():
    """The :func:`write_pyramid` writer, for tests that build their own slides (a fixture, not an import from
    ``conftest``: with several conftest modules that name is whichever pytest imported first)."""
    return write_pyramid
