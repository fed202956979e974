"""The feature-file layout: one HDF5 file of tile embeddings per slide, and the key that makes two comparable.

Layout of ``<slide>.h5`` (the names TRIDENT and CLAM users expect), written by :func:`write_feature_file` and read
by :func:`load_features`:

- ``features``: (N, D) float32, one row per tile;
- ``coords``: (N, 2) int64 top-left (x, y) in level-0 pixels, with the tiling geometry as attributes;
- file attributes: ``feature_key`` (the full :class:`FeatureKey` as JSON), ``patch_size``, ``patch_size_level0``,
  ``target_mpp``, ``level0_mpp``, ``encoder``, ``encoder_weights``, ``checkpoint``, ``weights_sha256``,
  ``input_size``, ``input_size_source``, ``mean``, ``std``, ``name``, ``slide_path``, ``ssmamba_version``.

Features change with the encoder and its weights, the side tiles are embedded at, the tiles' resolution and
size, and the input normalisation. All of these form the :class:`FeatureKey`; it names the folder the features
go to (readably: ``features_0.50mpp_224px/ssmamba_tiny-1a2b3c4d_in224/``), is written in full into every
feature file (attribute ``feature_key``, JSON) and into ``feature_key.json`` in the folder. Adding a slide to a
folder whose key differs is an error (:class:`FeatureKeyMismatch`) unless the caller asks to overwrite, so a
folder never holds features of two settings, and ``mil train`` refuses bags whose keys disagree.

This module is the bottom layer both sides share: ``ssmamba.wsi`` writes these files and ``ssmamba.mil`` reads
them, and neither imports the other.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from ssmamba._version import __version__
from ssmamba.io.atomic import atomic_write_text

KEY_FILE = "feature_key.json"
KEY_ATTRIBUTE = "feature_key"


class FeatureKeyMismatch(Exception):
    """Features made with other settings are already where new ones would go."""


@dataclass(frozen=True)
class FeatureKey:
    """Everything that changes the features of a tile.

    Attributes:
        encoder: architecture name.
        weights: "checkpoint", "pretrained", "random" or "in-memory".
        weights_sha256: hash of the weights (checkpoint file, or the state dict).
        input_size: side the tiles are embedded at, in pixels.
        input_size_source: why that side ("tile", "model" or "option"; see ``InputSizeSource``).
        target_mpp: µm/px of the tiles.
        patch_size: tile side in pixels at ``target_mpp``.
        mean, std: per-channel input normalisation (rounded to 6 decimals).
    """

    encoder: str
    weights: str
    weights_sha256: str
    input_size: int
    input_size_source: str
    target_mpp: float
    patch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def for_encoder(cls, encoder, target_mpp: float, patch_size: int) -> "FeatureKey":
        """The key of ``encoder`` (an :class:`ssmamba.models.encoders.Encoder`) applied to ``patch_size`` px
        tiles at ``target_mpp`` µm/px."""
        size, source = encoder.tile_input_size(patch_size)
        return cls(encoder=encoder.architecture, weights=encoder.weights, weights_sha256=encoder.weights_sha256,
                   input_size=int(size), input_size_source=source.value, target_mpp=round(float(target_mpp), 6),
                   patch_size=int(patch_size), mean=tuple(round(float(v), 6) for v in encoder.mean),
                   std=tuple(round(float(v), 6) for v in encoder.std))

    @classmethod
    def from_json(cls, text: str) -> "FeatureKey":
        values = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def folder(self) -> Path:
        """``features_<mpp>mpp_<size>px/<encoder>-[random-]<hash8>_in<input size>``, relative."""
        marker = "random-" if self.weights == "random" else ""
        return (Path(f"features_{self.target_mpp:.2f}mpp_{self.patch_size}px")
                / f"{self.encoder}-{marker}{self.weights_sha256[:8]}_in{self.input_size}")

    def differences(self, other: "FeatureKey") -> list[str]:
        """``field: this -> other`` for every field that differs."""
        return [f"{f.name}: {getattr(other, f.name)} -> {getattr(self, f.name)}" for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]


def features_folder(out_dir: str | Path, key: FeatureKey) -> Path:
    """Where the features of ``key`` go under ``out_dir``."""
    return Path(out_dir) / key.folder


def read_file_key(path: str | Path) -> FeatureKey | None:
    """The key stored in a feature file, None when it has none (older ssmamba, CLAM or TRIDENT files)."""
    with h5py.File(path, "r") as h5:
        text = h5.attrs.get(KEY_ATTRIBUTE)
    return None if text is None else FeatureKey.from_json(str(text))


def _mismatch(where: Path, found: FeatureKey | None, wanted: FeatureKey) -> FeatureKeyMismatch:
    what = ("was written without a feature key (an older ssmamba?)" if found is None
            else "was made with other settings (" + "; ".join(wanted.differences(found)) + ")")
    return FeatureKeyMismatch(f"{where} {what}; features of different settings must not mix: pass --overwrite "
                              f"(overwrite=True) to redo it, or write to another --out")


def check_file_key(path: Path, key: FeatureKey) -> None:
    """Raise :class:`FeatureKeyMismatch` unless the feature file at ``path`` was made with ``key``."""
    found = read_file_key(path)
    if found != key:
        raise _mismatch(path, found, key)


def claim_folder(folder: Path, key: FeatureKey, overwrite: bool = False) -> None:
    """Create ``folder`` for features of ``key`` and write its ``feature_key.json``.

    Raises:
        FeatureKeyMismatch: the folder's key file holds another key and ``overwrite`` is False.
    """
    key_file = folder / KEY_FILE
    if key_file.is_file() and not overwrite:
        found = FeatureKey.from_json(key_file.read_text())
        if found != key:
            raise _mismatch(folder, found, key)
        return
    folder.mkdir(parents=True, exist_ok=True)
    # atomic: processes that extract slides of one cohort side by side read each other's key file
    atomic_write_text(key_file, json.dumps(asdict(key), indent=2, sort_keys=True) + "\n")


@contextmanager
def feature_file_writer(path: str | Path, coords: np.ndarray, num_features: int, key: FeatureKey, *,
                        geometry: dict, attributes: dict) -> Iterator[h5py.Dataset]:
    """Write the feature file ``path`` (see the module docstring): yields its ``features`` dataset, (N, D)
    float32 with N = ``len(coords)``, for the caller to fill; the file is written under a ``.partial`` name and
    renamed to ``path`` only when the block ends normally, so a ``.h5`` that exists is complete.

    Args:
        coords: (N, 2) level-0 top-left corners of the tiles.
        key: the feature key, stored as JSON in the ``feature_key`` attribute.
        geometry: the tiling (``patch_size``, ``patch_size_level0``, ``target_mpp``, ``level0_mpp``, ``name``, ...),
            stored on the file and on ``coords`` (where CLAM looks for it).
        attributes: further file attributes (encoder, weights, normalisation, slide path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named by host and process: jobs that share a cohort never write into one file
    partial = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.partial")
    rows = len(coords)
    try:
        with h5py.File(partial, "w") as h5:
            features = h5.create_dataset("features", shape=(rows, num_features), dtype=np.float32,
                                         chunks=(max(1, min(rows, 1024)), num_features) if rows else None)
            coords_set = h5.create_dataset("coords", data=np.asarray(coords).astype(np.int64).reshape(-1, 2))
            coords_set.attrs.update(geometry)
            h5.attrs.update(geometry)
            h5.attrs.update(attributes)
            h5.attrs.update(ssmamba_version=__version__)
            h5.attrs[KEY_ATTRIBUTE] = key.to_json()
            yield features
        partial.replace(path)  # atomic: a reader sees the whole file or none
    finally:
        partial.unlink(missing_ok=True)  # what a failed write left (nothing after the rename)


def count_rows(path: str | Path) -> int:
    """The number of tiles in a feature file (0 when it has no ``features``)."""
    with h5py.File(path, "r") as h5:
        return int(h5["features"].shape[0]) if "features" in h5 else 0


@dataclass
class SlideFeatures:
    """Contents of a feature file: ``features`` (N, D) float32, ``coords`` (N, 2) int64, and its attributes."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict


def load_features(path: str | Path) -> SlideFeatures:
    """Read a feature file written by :func:`feature_file_writer` (or by CLAM/TRIDENT: same dataset names)."""
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
