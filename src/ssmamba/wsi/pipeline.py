"""The per-slide steps behind ``ssmamba wsi tile`` and ``ssmamba wsi extract``, usable from Python.

Folder layout (``OUT`` is the output folder given to ``tile``)::

    OUT/patches_0.50mpp_224px/<slide>.h5            coords + tiling geometry (CLAM-style patches file)
    OUT/patches_0.50mpp_224px/<slide>.png           thumbnail with the kept tiles outlined
    OUT/patches_0.50mpp_224px/errors.log            slides that failed (with --skip-errors)
    OUT/features_0.50mpp_224px/<encoder>-<hash8>_in<size>/<slide>.h5
                                                    features + coords (TRIDENT/CLAM-style features file)
    OUT/features_0.50mpp_224px/<encoder>-<hash8>_in<size>/feature_key.json
                                                    everything that made these features (see ssmamba.io.features)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssmamba.io.features import FeatureKey, claim_folder, features_folder
from ssmamba.models.encoders import Encoder
from ssmamba.wsi.extract import ExtractionResult, extract_slide_features
from ssmamba.wsi.slide import open_slide
from ssmamba.wsi.config import TilingConfig
from ssmamba.wsi.tiling import TileGrid, draw_tiles, plan_tiles


def patches_folder(out_dir: str | Path, config: TilingConfig) -> Path:
    return Path(out_dir) / f"patches_{config.folder_name}"


@dataclass
class TilingResult:
    slide_name: str
    num_tiles: int
    patches_path: Path
    thumbnail_path: Path
    skipped: bool


def tile_slide(slide_path: str | Path, config: TilingConfig, out_dir: str | Path, *, slide_mpp: float | None = None,
               overwrite: bool = False) -> TilingResult:
    """Tile one slide into ``patches_<tag>/<slide>.h5`` plus a thumbnail PNG with the tiles drawn.

    A slide whose patches file exists is skipped unless ``overwrite``.
    """
    folder = patches_folder(out_dir, config)
    name = Path(slide_path).stem
    patches_path, thumbnail_path = folder / f"{name}.h5", folder / f"{name}.png"
    if patches_path.exists() and not overwrite:
        return TilingResult(name, len(TileGrid.load_h5(patches_path)), patches_path, thumbnail_path, skipped=True)
    with open_slide(slide_path, mpp=slide_mpp) as slide:
        thumbnail = slide.thumbnail(config.thumbnail_max_side)
        grid = plan_tiles(slide, config, thumbnail=thumbnail)
    folder.mkdir(parents=True, exist_ok=True)
    draw_tiles(thumbnail, grid).save(thumbnail_path)
    grid.save_h5(patches_path, config)
    return TilingResult(name, len(grid), patches_path, thumbnail_path, skipped=False)


def find_patch_files(inputs: list[str | Path]) -> list[Path]:
    """Patches files among ``inputs``: ``.h5`` files as given, folders searched for ``patches_*/*.h5``."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            direct = sorted(path.glob("*.h5"))
            found.extend(direct if direct else sorted(path.glob("patches_*/*.h5")))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise FileNotFoundError(f"no patches files (*.h5 written by `ssmamba wsi tile`) in "
                                f"{', '.join(map(str, inputs))}")
    return found


def extract_from_patches(patches_path: str | Path, encoder: Encoder, out_dir: str | Path, *,
                         slide_dir: str | Path | None = None, slide_mpp: float | None = None, batch_size: int = 64,
                         num_workers: int = 0, device: str = "cpu", overwrite: bool = False,
                         progress: bool = True) -> ExtractionResult:
    """Embed the tiles listed in one patches file into ``<FeatureKey.folder>/<slide>.h5`` under ``out_dir``.

    The folder's ``feature_key.json`` is written on first use; a folder or file made with other settings raises
    :class:`~ssmamba.io.features.FeatureKeyMismatch` unless ``overwrite``.

    Args:
        slide_dir: folder holding the slides now, when they moved since tiling (looked up by file name).
        slide_mpp: the level-0 µm/px override used at tiling, for slides without resolution metadata; by
            default the value stored in the patches file is used.
    """
    grid = TileGrid.load_h5(patches_path)
    slide_path = Path(grid.slide_path)
    if slide_dir is not None:
        slide_path = Path(slide_dir) / slide_path.name
    if not slide_path.is_file():
        raise FileNotFoundError(f"{patches_path}: its slide {slide_path} is gone; pass --slide-dir with the folder "
                                f"that holds {slide_path.name} now")
    key = FeatureKey.for_encoder(encoder, grid.target_mpp, grid.patch_size)
    folder = features_folder(out_dir, key)
    claim_folder(folder, key, overwrite=overwrite)
    out_path = folder / f"{grid.slide_name}.h5"
    return extract_slide_features(grid, encoder, out_path, slide_path=slide_path,
                                  slide_mpp=slide_mpp if slide_mpp is not None else grid.level0_mpp,
                                  batch_size=batch_size, num_workers=num_workers, device=device,
                                  overwrite=overwrite, progress=progress)
