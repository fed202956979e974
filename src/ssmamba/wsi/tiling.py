"""Tiling a slide at a target resolution (µm/px), keeping tiles that hold enough tissue.

A tile is ``patch_size`` pixels square *at the target resolution*. Its top-left corner is stored in level-0 pixels,
as CLAM and TRIDENT do, so coordinates mean the same thing whatever pyramid level the pixels are read from. To read
a tile we pick the coarsest level that is at least as fine as the target, read the matching square there and resize
it, so a 0.5 µm/px tile of a 0.25 µm/px slide is read from a level with downsample <= 2 and shrunk, never enlarged
unless the slide itself is coarser than the target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from ssmamba.wsi.config import MICRONS_AT_1X, TilingConfig
from ssmamba.wsi.slide import Slide
from ssmamba.wsi.tissue import tissue_mask

@dataclass
class TileGrid:
    """The tiles of one slide: level-0 coordinates plus everything needed to read them back.

    Attributes:
        coords: (N, 2) int64 top-left (x, y) of each tile in level-0 pixels.
        tissue_fraction: (N,) float32 share of each tile covered by the tissue mask.
        patch_size: tile side at the target resolution, in pixels.
        patch_size_level0: tile side in level-0 pixels (``patch_size * target_mpp / level0_mpp``, rounded).
        read_level: pyramid level the tiles are read from.
        read_size: tile side in pixels at ``read_level`` (resized to ``patch_size`` after reading).
        target_mpp, level0_mpp: µm/px of the tiles and of the slide's level 0.
        level0_dimensions: (width, height) of level 0.
        slide_name, slide_path: id and location of the slide.
    """

    coords: np.ndarray
    tissue_fraction: np.ndarray
    patch_size: int
    patch_size_level0: int
    read_level: int
    read_size: int
    target_mpp: float
    level0_mpp: float
    level0_dimensions: tuple[int, int]
    slide_name: str
    slide_path: str

    def __len__(self) -> int:
        return len(self.coords)

    def read_tile(self, slide: Slide, index: int) -> Image.Image:
        """RGB tile ``index`` at the target resolution, ``patch_size`` pixels square."""
        x, y = (int(v) for v in self.coords[index])
        tile = slide.read_region((x, y), self.read_level, (self.read_size, self.read_size))
        if tile.size != (self.patch_size, self.patch_size):
            tile = tile.resize((self.patch_size, self.patch_size), Image.Resampling.LANCZOS)
        return tile

    def save_h5(self, path: str | Path, config: TilingConfig | None = None) -> None:
        """CLAM-style patches file: dataset ``coords`` (N, 2) with the geometry as attributes."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with h5py.File(partial, "w") as h5:
            coords = h5.create_dataset("coords", data=self.coords.astype(np.int64))
            h5.create_dataset("tissue_fraction", data=self.tissue_fraction.astype(np.float32))
            attributes = {
                "patch_size": self.patch_size,
                "patch_size_level0": self.patch_size_level0,
                "patch_level": self.read_level,  # CLAM's name for the level tiles are read from
                "read_size": self.read_size,
                "target_mpp": self.target_mpp,
                "level0_mpp": self.level0_mpp,
                "target_magnification": MICRONS_AT_1X / self.target_mpp,
                "level_dim": np.asarray(self.level0_dimensions, dtype=np.int64),
                "name": self.slide_name,
                "slide_path": self.slide_path,
            }
            if config is not None:
                tissue = asdict(config.tissue)
                attributes.update(stride=config.stride or config.patch_size,
                                  min_tissue_fraction=config.min_tissue_fraction,
                                  use_tissue_mask=config.use_tissue_mask,
                                  **{f"tissue_{k}": (-1.0 if v is None else v) for k, v in tissue.items()})
            coords.attrs.update(attributes)
        partial.replace(path)  # a crash mid-write leaves no file that looks finished

    @classmethod
    def load_h5(cls, path: str | Path) -> "TileGrid":
        with h5py.File(path, "r") as h5:
            if "coords" not in h5:
                raise ValueError(f"{path}: no 'coords' dataset; is this a patches file written by `ssmamba wsi tile`?")
            attrs = h5["coords"].attrs
            missing = [k for k in ("patch_size", "patch_size_level0", "patch_level", "read_size", "target_mpp",
                                   "level0_mpp", "level_dim", "name", "slide_path") if k not in attrs]
            if missing:
                raise ValueError(f"{path}: 'coords' lacks attributes {missing}; re-run `ssmamba wsi tile`")
            coords = h5["coords"][:]
            fraction = h5["tissue_fraction"][:] if "tissue_fraction" in h5 else np.ones(len(coords), np.float32)
            return cls(coords=coords, tissue_fraction=fraction, patch_size=int(attrs["patch_size"]),
                       patch_size_level0=int(attrs["patch_size_level0"]), read_level=int(attrs["patch_level"]),
                       read_size=int(attrs["read_size"]), target_mpp=float(attrs["target_mpp"]),
                       level0_mpp=float(attrs["level0_mpp"]),
                       level0_dimensions=tuple(int(v) for v in attrs["level_dim"]),
                       slide_name=str(attrs["name"]), slide_path=str(attrs["slide_path"]))


def _tissue_fraction_per_tile(mask: np.ndarray, coords: np.ndarray, size_level0: float,
                              scale: tuple[float, float]) -> np.ndarray:
    """Share of tissue pixels of ``mask`` under each level-0 square, via a summed-area table.

    ``scale`` is (mask px per level-0 px) along x and y. Each box covers at least one mask pixel, so tiles
    smaller than a thumbnail pixel still get the value of the pixel they fall in.
    """
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = mask.shape
    x0 = np.clip(np.floor(coords[:, 0] * scale[0]).astype(np.int64), 0, width - 1)
    y0 = np.clip(np.floor(coords[:, 1] * scale[1]).astype(np.int64), 0, height - 1)
    x1 = np.clip(np.ceil((coords[:, 0] + size_level0) * scale[0]).astype(np.int64), x0 + 1, width)
    y1 = np.clip(np.ceil((coords[:, 1] + size_level0) * scale[1]).astype(np.int64), y0 + 1, height)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (inside / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def plan_tiles(slide: Slide, config: TilingConfig, thumbnail: Image.Image | None = None) -> TileGrid:
    """Tile ``slide`` on a regular grid at ``config.target_mpp`` and keep tiles over tissue.

    Only tiles lying wholly inside the slide are made. ``thumbnail`` (from ``slide.thumbnail``) is reused when
    given, to avoid decoding it twice.
    """
    downsample = config.target_mpp / slide.mpp  # level-0 pixels per target pixel
    size_level0 = config.patch_size * downsample
    step_level0 = (config.stride or config.patch_size) * downsample
    width, height = slide.dimensions
    n_x = int(math.floor((width - size_level0) / step_level0)) + 1 if width >= size_level0 else 0
    n_y = int(math.floor((height - size_level0) / step_level0)) + 1 if height >= size_level0 else 0
    xs = np.round(np.arange(n_x) * step_level0).astype(np.int64)
    ys = np.round(np.arange(n_y) * step_level0).astype(np.int64)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")  # row-major: tiles run left to right, then down
    coords = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)

    if config.use_tissue_mask and len(coords):
        thumbnail = thumbnail or slide.thumbnail(config.thumbnail_max_side)
        mask = tissue_mask(thumbnail, config.tissue)
        scale = (mask.shape[1] / width, mask.shape[0] / height)
        fraction = _tissue_fraction_per_tile(mask, coords, size_level0, scale)
        keep = fraction >= max(config.min_tissue_fraction, 1e-9)  # a tile with no tissue at all is never kept
        coords, fraction = coords[keep], fraction[keep]
    else:
        fraction = np.ones(len(coords), dtype=np.float32)

    read_level = slide.best_level_for_downsample(downsample)
    read_size = max(1, int(round(size_level0 / slide.level_downsamples[read_level])))
    return TileGrid(coords=coords, tissue_fraction=fraction, patch_size=config.patch_size,
                    patch_size_level0=max(1, int(round(size_level0))), read_level=read_level, read_size=read_size,
                    target_mpp=config.target_mpp, level0_mpp=slide.mpp, level0_dimensions=(width, height),
                    slide_name=slide.name, slide_path=str(slide.path.resolve()))


def draw_tiles(thumbnail: Image.Image, grid: TileGrid, colour: tuple[int, int, int] = (0, 160, 0)) -> Image.Image:
    """Copy of ``thumbnail`` with every tile outlined, for checking at a glance what was kept."""
    image = thumbnail.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    scale_x = image.width / grid.level0_dimensions[0]
    scale_y = image.height / grid.level0_dimensions[1]
    for x, y in grid.coords:
        x0, y0 = x * scale_x, y * scale_y
        x1, y1 = (x + grid.patch_size_level0) * scale_x, (y + grid.patch_size_level0) * scale_y
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour)
    return image
