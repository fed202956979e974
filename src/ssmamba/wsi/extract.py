"""Embed the tiles of a slide with a frozen encoder and write one HDF5 file per slide.

The file layout is :mod:`ssmamba.io.features`'s. A slide whose ``.h5`` exists is done, provided its feature key
is the one asked for (otherwise :class:`~ssmamba.io.features.FeatureKeyMismatch`). Files are written under a
``.partial`` name of the writing process and renamed when complete, so processes or jobs that share a cohort never
write into one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssmamba.io.features import FeatureKey, check_file_key, count_rows, feature_file_writer
from ssmamba.models.encoders import Encoder
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
            that its feature key is this one (:class:`~ssmamba.io.features.FeatureKeyMismatch` otherwise).
        slide_path: where the slide is now (defaults to the path stored in the grid).
        slide_mpp: level-0 µm/px override, for slides without resolution metadata.
        batch_size, num_workers: DataLoader settings; features are written batch by batch, so memory stays
            bounded by one batch whatever the number of tiles.
    """
    out_path = Path(out_path)
    key = FeatureKey.for_encoder(encoder, grid.target_mpp, grid.patch_size)
    if out_path.exists() and not overwrite:
        check_file_key(out_path, key)
        return ExtractionResult(out_path, count_rows(out_path), skipped=True, key=key)
    dataset = TileDataset(slide_path or grid.slide_path, grid, encoder.mean, encoder.std, key.input_size,
                          slide_mpp=slide_mpp)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    model = encoder.model.to(device).eval()
    with feature_file_writer(out_path, grid.coords, encoder.num_features, key, geometry=_geometry(grid),
                             attributes=_provenance(grid, encoder, key)) as features:
        for tiles, indices in tqdm(loader, desc=grid.slide_name, unit="batch", disable=not progress, leave=False):
            embeddings = model(tiles.to(device, non_blocking=True))
            if embeddings.ndim != 2 or embeddings.shape[1] != encoder.num_features:
                raise ValueError(f"encoder {encoder.name} returned shape {tuple(embeddings.shape)}, expected "
                                 f"(batch, {encoder.num_features}); build it with num_classes=0 (pooled embedding)")
            start, stop = int(indices[0]), int(indices[-1]) + 1  # no shuffling: batches are contiguous
            features[start:stop] = embeddings.float().cpu().numpy()
    dataset.close()
    return ExtractionResult(out_path, len(grid), skipped=False, key=key)


def _geometry(grid: TileGrid) -> dict:
    return {"patch_size": grid.patch_size, "patch_size_level0": grid.patch_size_level0,
            "patch_level": grid.read_level, "target_mpp": grid.target_mpp, "level0_mpp": grid.level0_mpp,
            "level_dim": np.asarray(grid.level0_dimensions, dtype=np.int64), "name": grid.slide_name}


def _provenance(grid: TileGrid, encoder: Encoder, key: FeatureKey) -> dict:
    return dict(encoder=encoder.name, encoder_weights=encoder.weights, checkpoint=encoder.checkpoint,
                weights_sha256=encoder.weights_sha256, input_size=key.input_size,
                input_size_source=key.input_size_source, mean=np.asarray(encoder.mean, np.float32),
                std=np.asarray(encoder.std, np.float32), slide_path=grid.slide_path)
