"""Array files: MedMNIST ``.npz`` (e.g. PathMNIST) and PatchCamelyon HDF5 pairs, read lazily.

* ``.npz`` with keys ``{train,val,test}_images`` (N, H, W, 3) uint8 and ``{split}_labels`` (N,) or (N, 1). Only the
  array headers are read to build records; an image array is loaded (once per process) when first sampled.
* PatchCamelyon: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``; ``x`` is (N, 96, 96, 3) uint8 and
  ``y`` is (N, 1, 1, 1). Rows are read one at a time with h5py. Classes are named ``"0"`` (no tumour in the
  centre 32x32) and ``"1"`` (tumour), as in ``pcam1000/labels.csv``, so a model moves between the two unchanged.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ssmamba.data.catalogue import Catalogue, class_index, unknown_label_error
from ssmamba.data.records import UNLABELLED, ArrayItem, Record
from ssmamba.data.splits import Split

# MedMNIST v2 PathMNIST label order (NCT-CRC-HE-100K tissue classes).
PATHMNIST_CLASSES = ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                     "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]
PCAM_CLASSES = ["0", "1"]

_PCAM_PATTERN = re.compile(r"camelyonpatch_level_2_split_(train|valid|test)_x\.h5$")
_PCAM_SPLITS = {"train": Split.TRAIN, "valid": Split.VAL, "test": Split.TEST}


def _npz_array_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of every array in an .npz, from the .npy headers only (no decompression of data)."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            shapes[name[:-4]] = (shape, dtype)
    return shapes


def _check_images(source: str, key: str, shape: tuple[int, ...], dtype: np.dtype, n_labels: int | None) -> None:
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)) or dtype != np.uint8:
        raise ValueError(f"{source}: array {key!r} must be (N, H, W, 3) or (N, H, W) uint8, got {shape} {dtype}")
    if n_labels is not None and shape[0] != n_labels:
        raise ValueError(f"{source}: {key!r} holds {shape[0]} images but its labels hold {n_labels}")


def _label_records(source: str, path: Path, key: str, labels: np.ndarray | None, split: Split, n: int,
                   classes: Sequence[str]) -> list[Record]:
    if labels is None:
        return [Record(ArrayItem(path, key, i), UNLABELLED, split.value) for i in range(n)]
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise ValueError(f"{source}: labels of {key!r} have shape {labels.shape}; only single-label data is supported")
    labels = labels[:, 0].astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if bad.size:
        raise unknown_label_error(source, f"{key} row {bad[0]}", str(labels[bad[0]]), classes)
    return [Record(ArrayItem(path, key, i), int(label), split.value) for i, label in enumerate(labels)]


def read_npz(path: Path, *, labelled: bool = True, classes: Sequence[str] | None = None) -> Catalogue:
    """Records of every split found in a MedMNIST-style ``.npz``; PathMNIST class names when the file is one."""
    shapes = _npz_array_shapes(path)
    splits = [s for s in Split if f"{s.value}_images" in shapes]
    if not splits:
        raise ValueError(f"{path}: no '<split>_images' arrays (train/val/test); arrays are {sorted(shapes)}")
    labels_by_split = {}
    if labelled:
        with np.load(path) as archive:
            for split in splits:
                if f"{split.value}_labels" not in shapes:
                    raise ValueError(f"{path}: '{split.value}_images' has no '{split.value}_labels' array")
                labels_by_split[split] = np.asarray(archive[f"{split.value}_labels"])
        if classes is None:
            n_classes = int(max(labels.max() for labels in labels_by_split.values())) + 1
            is_pathmnist = path.name.lower().startswith("pathmnist") and n_classes <= len(PATHMNIST_CLASSES)
            classes = PATHMNIST_CLASSES if is_pathmnist else [str(i) for i in range(n_classes)]
    records = []
    for split in splits:
        key = f"{split.value}_images"
        shape, dtype = shapes[key]
        labels = labels_by_split.get(split)
        _check_images(str(path), key, shape, dtype, None if labels is None else len(labels))
        records.extend(_label_records(str(path), path, key, labels, split, shape[0], classes or []))
    return Catalogue(str(path), records, list(classes or []))


def _pcam_x_files(source: Path) -> dict[Split, Path]:
    if source.is_dir():
        found = {}
        for path in sorted(source.iterdir()):
            match = _PCAM_PATTERN.search(path.name)
            if match:
                found[_PCAM_SPLITS[match.group(1)]] = path
        if not found:
            raise ValueError(f"{source}: no camelyonpatch_level_2_split_<split>_x.h5 files")
        return found
    match = _PCAM_PATTERN.search(source.name)
    if match is None:
        raise ValueError(f"{source}: expected a PatchCamelyon file named "
                         "camelyonpatch_level_2_split_{train,valid,test}_x.h5 (its labels in the matching _y.h5)")
    return {_PCAM_SPLITS[match.group(1)]: source}


def is_pcam_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_PCAM_PATTERN.search(p.name) for p in folder.iterdir())


def read_pcam(source: Path, *, labelled: bool = True, classes: Sequence[str] | None = None) -> Catalogue:
    """Records of PatchCamelyon HDF5 pairs: a folder holding them, or one ``..._x.h5`` file."""
    if source.name.endswith(".gz"):
        raise ValueError(f"{source}: PatchCamelyon files are distributed gzipped; run `gunzip {source}` first")
    classes = list(classes) if classes is not None else PCAM_CLASSES
    index = class_index(classes)
    records = []
    for split, x_path in _pcam_x_files(source).items():
        with h5py.File(x_path, "r") as handle:
            if "x" not in handle:
                raise ValueError(f"{x_path}: no dataset 'x'; datasets are {list(handle)}")
            shape, dtype = handle["x"].shape, handle["x"].dtype
        labels = None
        if labelled:
            y_path = x_path.with_name(x_path.name.replace("_x.h5", "_y.h5"))
            if not y_path.is_file():
                raise FileNotFoundError(f"{x_path}: labels file {y_path.name} is missing (or pass labelled=False)")
            with h5py.File(y_path, "r") as handle:
                if "y" not in handle:
                    raise ValueError(f"{y_path}: no dataset 'y'; datasets are {list(handle)}")
                raw = np.asarray(handle["y"]).reshape(-1)
            # PCam stores 0/1; map through the class names so a custom class list keeps its meaning.
            unknown = [v for v in np.unique(raw) if str(int(v)) not in index]
            if unknown:
                raise unknown_label_error(str(y_path), "dataset 'y'", str(int(unknown[0])), classes)
            labels = np.array([index[str(int(v))] for v in raw], dtype=np.int64)
        _check_images(str(x_path), "x", shape, dtype, None if labels is None else len(labels))
        records.extend(_label_records(str(x_path), x_path, "x", labels, split, shape[0], classes if labelled else []))
    return Catalogue(str(source), records, classes if labelled else [])
