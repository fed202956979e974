"""Generated MIL data: bags where a single "key" instance decides the label, written as feature files."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch


def make_key_instance_bags(n_bags: int, dim: int = 16, min_size: int = 10, max_size: int = 30,
                           seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Bags of Gaussian noise instances at random cells of an 8 x 8 tile grid; a positive bag hides exactly one
    instance shifted by 4 along the first 4 dimensions. Mean pooling dilutes that instance by the bag size;
    attention must find it. Labels alternate 0, 1, 0, ..."""
    generator = torch.Generator().manual_seed(seed)
    key = torch.zeros(dim)
    key[:4] = 4.0
    bags = []
    for index in range(n_bags):
        size = int(torch.randint(min_size, max_size + 1, (1,), generator=generator))
        features = torch.randn(size, dim, generator=generator)
        label = index % 2
        if label:
            features[int(torch.randint(0, size, (1,), generator=generator))] += key
        cells = torch.randperm(64, generator=generator)[:size]
        coords = torch.stack([cells % 8, cells // 8], dim=1) * 256
        bags.append((features, coords, label))
    return bags


def write_bag_files(folder: Path, bags, prefix: str = "slide") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for index, (features, coords, _) in enumerate(bags):
        slide_id = f"{prefix}_{index:03d}"
        with h5py.File(folder / f"{slide_id}.h5", "w") as h5:
            h5["features"] = features.numpy().astype(np.float32)
            h5["coords"] = coords.numpy().astype(np.int64)
        ids.append(slide_id)
    return ids


@pytest.fixture
def key_instance_bags():
    return make_key_instance_bags


@pytest.fixture
def bag_writer():
    """The :func:`write_bag_files` helper, for tests that lay out their own feature folders."""
    return write_bag_files


def write_bag_table(folder: Path) -> tuple[Path, Path]:
    """24 bags as feature files + a CSV slide_id,label,patient_id (two slides per patient) in ``folder``."""
    bags = make_key_instance_bags(24, dim=8, min_size=10, max_size=20)
    ids = write_bag_files(folder / "features", bags)
    table = folder / "bags.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "label", "patient_id"])
        for index, (slide_id, (_, _, label)) in enumerate(zip(ids, bags)):
            writer.writerow([slide_id, ["benign", "tumour"][label], f"p{index // 4 * 2 + label}"])
    return table, folder / "features"


@pytest.fixture
def bag_folder(tmp_path: Path) -> tuple[Path, Path]:
    """:func:`write_bag_table` in the test's own folder."""
    return write_bag_table(tmp_path)


@pytest.fixture(scope="module")
def module_bag_folder(tmp_path_factory) -> tuple[Path, Path]:
    """:func:`write_bag_table`, once for a module's tests (e.g. to share one expensive run between them)."""
    return write_bag_table(tmp_path_factory.mktemp("bags"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Bags here are tiny: one thread is several times faster than two fighting over small kernels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
