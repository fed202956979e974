"""Embed the tiles of a slide with a frozen encoder and write one HDF5 file per slide.

Layout of ``<slide>.h5`` (the names TRIDENT and CLAM users expect):

- ``features``: (N, D) float32, one row per tile;
- ``coords``: (N, 2) int64 top-left (x, y) in level-0 pixels, with the tiling geometry as attributes;
- file attributes: ``feature_key`` (the full :class:`~ssmamba.wsi.feature_key.FeatureKey` as JSON),
  ``patch_size``, ``patch_size_level0``, ``target_mpp``, ``level0_mpp``, ``encoder``, ``encoder_weights``,
  ``checkpoint``, ``weights_sha256``, ``input_size``, ``input_size_source``, ``mean``, ``std``, ``name``,
  ``slide_path``, ``ssmamba_version``.

Files are written under a ``.partial`` name of the writing process and renamed when complete, so a slide whose
``.h5`` exists is done, provided its feature key is the one asked for (otherwise
:class:`~ssmamba.wsi.feature_key.FeatureKeyMismatch`), and processes or jobs that share a cohort never write into
one file.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssmamba.wsi.encoders import Encoder
from ssmamba.wsi.feature_key import KEY_ATTRIBUTE, FeatureKey, check_file_key
from ssmamba.wsi.slide import Slide, open_slide
from ssmamba.wsi.tiling import TileGrid


class TileDataset(Dataset):
    """The tiles of one slide as normalised tensors, read lazily.

    The slide is opened on first access in each worker process, because OpenSlide handles cannot be pickled.

    Returns:
        ``(tile, index)`` with ``tile`` (3, S, S) float32, S = ``input_size`` or the grid's patch size.
    """

    def __init__(self, slide_path: str | Path, grid: TileGrid, mean, std, input_size: int | None = None,
                 slide_mpp: float | None = None) -> None:
        self.slide_path = Path(slide_path)
        self.grid = grid
        self.slide_mpp = slide_mpp if slide_mpp is not None else grid.level0_mpp
        self.input_size = input_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._slide: Slide | None = None

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._slide is None:
            self._slide = open_slide(self.slide_path, mpp=self.slide_mpp)
        tile = self.grid.read_tile(self._slide, index)
        if self.input_size is not None and tile.size != (self.input_size, self.input_size):
            tile = tile.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(tile, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return (pixels - self.mean) / self.std, index

    def __getstate__(self) -> dict:  # workers reopen the slide themselves
        return {**self.__dict__, "_slide": None}

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None


@dataclass
class ExtractionResult:
    path: Path
    num_tiles: int
    skipped: bool  # True when the file existed already (with the same feature key)
    key: FeatureKey


@torch.inference_mode()
def extract_slide_features(grid: TileGrid, encoder: Encoder, out_path: str | Path, *,
                           slide_path: str | Path | None = None, slide_mpp: float | None = None,
                           batch_size: int = 64, num_workers: int = 0, device: str | torch.device = "cpu",
                           overwrite: bool = False, progress: bool = True) -> ExtractionResult:
    """Embed every tile of ``grid`` and write ``out_path`` (see the module docstring for the layout).

    Args:
        grid: tiles of the slide (from ``plan_tiles`` or ``TileGrid.load_h5``).
        encoder: the frozen embedder (``load_encoder``).
        out_path: the ``.h5`` to write; when it exists and ``overwrite`` is False, nothing is done, after checking
            that its feature key is this one (:class:`~ssmamba.wsi.feature_key.FeatureKeyMismatch` otherwise).
        slide_path: where the slide is now (defaults to the path stored in the grid).
        slide_mpp: level-0 µm/px override, for slides without resolution metadata.
        batch_size, num_workers: DataLoader settings; features are written batch by batch, so memory stays
            bounded by one batch whatever the number of tiles.
    """
    out_path = Path(out_path)
    key = FeatureKey.for_encoder(encoder, grid.target_mpp, grid.patch_size)
    if out_path.exists() and not overwrite:
        check_file_key(out_path, key)
        return ExtractionResult(out_path, _count_rows(out_path), skipped=True, key=key)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dataset = TileDataset(slide_path or grid.slide_path, grid, encoder.mean, encoder.std, key.input_size,
                          slide_mpp=slide_mpp)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    model = encoder.model.to(device).eval()
    partial = out_path.with_name(f"{out_path.name}.{socket.gethostname()}-{os.getpid()}.partial")
    try:
        with h5py.File(partial, "w") as h5:
            chunks = (max(1, min(len(grid), 1024)), encoder.num_features) if len(grid) else None
            features = h5.create_dataset("features", shape=(len(grid), encoder.num_features), dtype=np.float32,
                                         chunks=chunks)
            coords = h5.create_dataset("coords", data=grid.coords.astype(np.int64).reshape(-1, 2))
            _write_attributes(h5, coords, grid, encoder, key)
            batches = tqdm(loader, desc=grid.slide_name, unit="batch", disable=not progress, leave=False)
            for tiles, indices in batches:
                embeddings = model(tiles.to(device, non_blocking=True))
                if embeddings.ndim != 2 or embeddings.shape[1] != encoder.num_features:
                    raise ValueError(f"encoder {encoder.name} returned shape {tuple(embeddings.shape)}, expected "
                                     f"(batch, {encoder.num_features}); build it with num_classes=0 (pooled "
                                     "embedding)")
                start, stop = int(indices[0]), int(indices[-1]) + 1  # no shuffling: batches are contiguous
                features[start:stop] = embeddings.float().cpu().numpy()
        dataset.close()
        partial.replace(out_path)  # atomic: a reader sees the whole file or none
    finally:
        partial.unlink(missing_ok=True)  # what a failed write left (nothing after the rename)
    return ExtractionResult(out_path, len(grid), skipped=False, key=key)


def _write_attributes(h5: h5py.File, coords: h5py.Dataset, grid: TileGrid, encoder: Encoder,
                      key: FeatureKey) -> None:
    from ssmamba import __version__

    geometry = {"patch_size": grid.patch_size, "patch_size_level0": grid.patch_size_level0,
                "patch_level": grid.read_level, "target_mpp": grid.target_mpp, "level0_mpp": grid.level0_mpp,
                "level_dim": np.asarray(grid.level0_dimensions, dtype=np.int64), "name": grid.slide_name}
    coords.attrs.update(geometry)
    h5.attrs.update(geometry)
    h5.attrs.update(encoder=encoder.name, encoder_weights=encoder.weights, checkpoint=encoder.checkpoint,
                    weights_sha256=encoder.weights_sha256, input_size=key.input_size,
                    input_size_source=key.input_size_source, mean=np.asarray(encoder.mean, np.float32),
                    std=np.asarray(encoder.std, np.float32), slide_path=grid.slide_path, ssmamba_version=__version__)
    h5.attrs[KEY_ATTRIBUTE] = key.to_json()


def _count_rows(path: Path) -> int:
    with h5py.File(path, "r") as h5:
        return int(h5["features"].shape[0]) if "features" in h5 else 0


@dataclass
class SlideFeatures:
    """Contents of a feature file: ``features`` (N, D) float32, ``coords`` (N, 2) int64, and its attributes."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict


def load_features(path: str | Path) -> SlideFeatures:
    """Read a feature file written by :func:`extract_slide_features` (or by CLAM/TRIDENT: same dataset names)."""
    with h5py.File(path, "r") as h5:
        if "features" not in h5:
            raise ValueError(f"{path}: no 'features' dataset (found {sorted(h5.keys())})")
        features = h5["features"][:].astype(np.float32)
        if features.ndim == 3 and features.shape[0] == 1:  # some CLAM forks store (1, N, D)
            features = features[0]
        coords = h5["coords"][:].astype(np.int64) if "coords" in h5 else np.zeros((len(features), 2), np.int64)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        attrs = {**dict(h5.attrs), **(dict(h5["coords"].attrs) if "coords" in h5 else {})}
    if features.ndim != 2 or coords.shape != (len(features), 2):
        raise ValueError(f"{path}: expected features (N, D) and coords (N, 2), got {features.shape} and "
                         f"{coords.shape}")
    return SlideFeatures(features, coords, attrs)
