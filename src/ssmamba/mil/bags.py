"""Bags for MIL: a CSV of slide labels joined to a folder of feature files (one ``<slide>.h5`` per slide).

CSV columns: an id column (``slide_id`` by default), a label column (``label``), and optionally ``split``
(train/val/test), ``fold`` (integer, for predefined cross-validation) and a patient column (``patient_id``,
``case_id`` or ``patient`` are found automatically) so that slides of one patient never straddle train and test.

An id is matched to ``<features_dir>/<id>.h5``, then to the file name and the stem of the id, so ids that are
image paths (``images/img1.png`` in the crchp bags CSV) find ``img1.h5``.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import torch
from torch.utils.data import Dataset

from ssmamba.io.features import KEY_ATTRIBUTE, FeatureKey, load_features

PATIENT_COLUMNS = ("patient_id", "case_id", "patient")
SPLIT_NAMES = ("train", "val", "test")
# Feature sets up to this size are read once and kept in memory; bigger ones are read from disk every epoch.
IN_MEMORY_LIMIT_BYTES = 4 << 30


@dataclass(frozen=True)
class BagRecord:
    slide_id: str
    label: int
    path: Path
    group: str  # patient id, or the slide id when there is no patient column
    split: str | None = None
    fold: int | None = None


@dataclass
class BagTable:
    """Bags of one CSV: records, class names (index = label), and the columns that were found."""

    records: list[BagRecord]
    class_names: list[str]
    patient_column: str | None
    source: Path

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def describe(self) -> str:
        counts = {name: sum(r.label == i for r in self.records) for i, name in enumerate(self.class_names)}
        groups = len({r.group for r in self.records})
        grouping = f"patients ({self.patient_column})" if self.patient_column else "groups (one per slide)"
        return (f"{len(self.records)} bags from {self.source} ({', '.join(f'{k}: {v}' for k, v in counts.items())}); "
                f"{groups} {grouping}")


def _feature_path(features_dir: Path, slide_id: str) -> Path | None:
    for candidate in dict.fromkeys((slide_id, Path(slide_id).name, Path(slide_id).stem)):
        path = features_dir / f"{candidate}.h5"
        if path.is_file():
            return path
    return None


def _sorted_labels(values: list[str]) -> list[str]:
    """Class order: numeric labels by value (0, 1, 2, 10), otherwise alphabetical."""
    try:
        return sorted(set(values), key=float)
    except ValueError:
        return sorted(set(values))


def read_bag_table(csv_path: str | Path, features_dir: str | Path, *, id_column: str = "slide_id",
                   label_column: str = "label", patient_column: str | None = None,
                   class_names: list[str] | None = None, allow_missing: bool = False) -> BagTable:
    """Read the bags CSV and find each bag's feature file.

    Args:
        csv_path: CSV with at least ``id_column`` and ``label_column``.
        features_dir: folder of ``<slide>.h5`` feature files (``wsi extract`` output).
        patient_column: column grouping slides by patient; None looks for patient_id/case_id/patient.
        class_names: fixed class order (e.g. a trained model's); labels outside it are an error.
        allow_missing: drop bags without a feature file (with a warning) instead of failing.
    """
    csv_path, features_dir = Path(csv_path), Path(features_dir)
    if not features_dir.is_dir():
        raise FileNotFoundError(f"features folder {features_dir} does not exist")
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0].keys()) if rows else []
    for needed in (id_column, label_column):
        if needed not in columns:
            raise ValueError(f"{csv_path}: no column {needed!r} (columns: {', '.join(columns) or 'none'}); "
                             f"choose the id/label columns with --id-column/--label-column")
    if patient_column is None:
        patient_column = next((c for c in PATIENT_COLUMNS if c in columns), None)
    elif patient_column not in columns:
        raise ValueError(f"{csv_path}: no patient column {patient_column!r} (columns: {', '.join(columns)})")

    labels = [row[label_column].strip() for row in rows]
    if any(not label for label in labels):
        raise ValueError(f"{csv_path}: row {labels.index('') + 2} has an empty {label_column!r}")
    names = list(class_names) if class_names is not None else _sorted_labels(labels)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"{csv_path}: labels {unknown} are not among the classes {names}")
    if class_names is None and len(names) < 2:
        raise ValueError(f"{csv_path}: only one class ({names}); MIL needs at least two")

    records, missing = [], []
    for line, (row, label) in enumerate(zip(rows, labels), start=2):
        slide_id = row[id_column].strip()
        path = _feature_path(features_dir, slide_id)
        if path is None:
            missing.append(slide_id)
            continue
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLIT_NAMES:
            raise ValueError(f"{csv_path} line {line}: split {split!r} is not one of {SPLIT_NAMES}")
        fold = row.get("fold")
        group = (row.get(patient_column) or "").strip() if patient_column else ""
        records.append(BagRecord(slide_id=Path(path).stem, label=names.index(label), path=path,
                                 group=group or slide_id, split=split,
                                 fold=int(fold) if fold not in (None, "") else None))
    if missing:
        message = (f"{len(missing)} of {len(rows)} bags in {csv_path} have no feature file in {features_dir} "
                   f"(e.g. {', '.join(missing[:5])})")
        if not allow_missing:
            raise FileNotFoundError(message + "; run `ssmamba wsi extract` for them or pass --allow-missing")
        warnings.warn(message + "; they are left out", stacklevel=2)
    if not records:
        raise ValueError(f"{csv_path}: no bag has a feature file in {features_dir}")
    return BagTable(records, names, patient_column, csv_path)


class BagDataset(Dataset):
    """``(features (N, D) float32, coords (N, 2) int64, label)`` per bag.

    Small feature sets (under 4 GiB) are read once and kept in memory; others are read on every access.
    """

    def __init__(self, records: list[BagRecord], in_memory: bool | None = None) -> None:
        self.records = list(records)
        if not self.records:
            raise ValueError("a BagDataset needs at least one bag")
        self.feature_dim = self._check_dims()
        if in_memory is None:
            in_memory = self._total_bytes() <= IN_MEMORY_LIMIT_BYTES
        self._cache = [self._read(i) for i in range(len(self.records))] if in_memory else None

    def _check_dims(self) -> int:
        """The embedding width, after checking that every file has the same one and the same feature key."""
        dims, keys = {}, {}
        for record in self.records:
            with h5py.File(record.path, "r") as h5:
                dims.setdefault(int(h5["features"].shape[-1]), record.path)
                key = h5.attrs.get(KEY_ATTRIBUTE)
            if key is not None:  # CLAM/TRIDENT files have none
                keys.setdefault(FeatureKey.from_json(str(key)), record.path)
        if len(dims) > 1:
            raise ValueError(f"feature files disagree on the embedding width: "
                             f"{', '.join(f'{d} ({p})' for d, p in dims.items())}; were they made by one encoder?")
        if len(keys) > 1:
            (first, first_path), (other, other_path) = list(keys.items())[:2]
            raise ValueError(f"feature files were made with different settings ({'; '.join(other.differences(first))}"
                             f": {first_path} vs {other_path}); features of different settings must not be mixed")
        return next(iter(dims))

    def _total_bytes(self) -> int:
        total = 0
        for record in self.records:
            with h5py.File(record.path, "r") as h5:
                total += int(h5["features"].size) * 4
        return total

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        record = self.records[index]
        bag = load_features(record.path)
        if len(bag.features) == 0:
            raise ValueError(f"{record.path}: the bag of {record.slide_id} is empty (no tiles)")
        return torch.from_numpy(bag.features), torch.from_numpy(bag.coords), record.label

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self._cache[index] if self._cache is not None else self._read(index)
