"""Small image trees, CSVs and array files written inside the tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from data_helpers import noise_image, write_manifest
from PIL import Image


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """``root/<class>/*.png``: classes a, b (4 RGB images each), plus grayscale, RGBA and palette files in b,
    and a nested subfolder in a."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for name, tint in (("a", (200, 120, 180)), ("b", (120, 80, 160))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(noise_image(rng, 24, tint)).save(root / name / f"{i}.png")
    (root / "a" / "nested").mkdir()
    Image.fromarray(noise_image(rng, 24, (200, 120, 180))).save(root / "a" / "nested" / "deep.jpg")
    Image.fromarray(noise_image(rng, 24, (0, 0, 0))).convert("L").save(root / "b" / "gray.png")
    Image.fromarray(noise_image(rng, 24, (0, 0, 0))).convert("RGBA").save(root / "b" / "rgba.png")
    Image.fromarray(noise_image(rng, 24, (0, 0, 0))).convert("P").save(root / "b" / "palette.png")
    return root


@pytest.fixture
def grouped_manifest(tmp_path: Path) -> Path:
    """``manifest.csv`` (path,label,patient_id), no split column: 12 patients x 4 images, labels by patient."""
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = []
    for patient in range(12):
        for i in range(4):
            name = f"img/p{patient}_{i}.png"
            Image.fromarray(noise_image(rng, 16, (150, 100, 150))).save(tmp_path / name)
            rows.append((name, ["benign", "tumour"][patient % 2], f"P{patient:02d}"))
    return write_manifest(tmp_path / "manifest.csv", rows, ("path", "label", "patient_id"))


@pytest.fixture
def pcam_dir(tmp_path: Path) -> Path:
    """Tiny PatchCamelyon files: x (N, 96, 96, 3) uint8 whose first pixel holds the row index; y (N, 1, 1, 1)."""
    folder = tmp_path / "pcam"
    folder.mkdir()
    for split, n in (("train", 6), ("valid", 3), ("test", 4)):
        x = np.zeros((n, 96, 96, 3), dtype=np.uint8)
        x[:, 0, 0, 0] = np.arange(n)
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as handle:
            handle.create_dataset("y", data=y)
    return folder


@pytest.fixture
def pathmnist_npz(tmp_path: Path) -> Path:
    """A PathMNIST-shaped ``.npz``: 28 px RGB, 9 classes, first pixel = row index."""
    arrays = {}
    for split, n in (("train", 18), ("val", 9), ("test", 9)):
        images = np.zeros((n, 28, 28, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = (np.arange(n) % 9).reshape(n, 1).astype(np.uint8)
    path = tmp_path / "pathmnist.npz"
    np.savez_compressed(path, **arrays)
    return path
