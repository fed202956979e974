"""What makes two feature files comparable: the feature key, and the folder named after it.

Features change with the encoder and its weights, the side tiles are embedded at, the tiles' resolution and
size, and the input normalisation. All of these form the :class:`FeatureKey`; it names the folder the features
go to (readably: ``features_0.50mpp_224px/ssmamba_tiny-1a2b3c4d_in224/``), is written in full into every
feature file (attribute ``feature_key``, JSON) and into ``feature_key.json`` in the folder. Adding a slide to a
folder whose key differs is an error (:class:`FeatureKeyMismatch`) unless the caller asks to overwrite, so a
folder never holds features of two settings, and ``mil train`` refuses bags whose keys disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py

from ssmamba.io.atomic import atomic_write_text
from ssmamba.wsi.encoders import Encoder

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
    def for_encoder(cls, encoder: Encoder, target_mpp: float, patch_size: int) -> "FeatureKey":
        """The key of ``encoder`` applied to ``patch_size`` px tiles at ``target_mpp`` µm/px."""
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
