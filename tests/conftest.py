"""Shared fixtures: the real data sets beside the checkout (skipped cleanly when absent)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


SRC = str(Path(__file__).resolve().parents[1] / "src")
_MAIN = "import sys\nfrom ssmamba.cli import main\nsys.argv[0] = 'ssmamba'\nmain()\n"


def _torchrun(folder: Path, *args, prelude: str = "", nproc: int = 2, env: dict | None = None):
    """``torchrun --standalone --nproc-per-node NPROC -m ssmamba ARGS`` (gloo, one thread per process) in a fresh
    interpreter, after ``prelude`` (e.g. a patch that records or kills), from a script written to ``folder``."""
    script = folder / f"launch_{abs(hash((prelude, args))) % 10**8}.py"
    script.write_text(prelude + _MAIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(script), *map(str, args)]
    environment = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


@pytest.fixture(scope="session")
def torchrun():
    """:func:`_torchrun`: run a command under torchrun with 2 CPU processes."""
    return _torchrun


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once (and the Hugging Face hub is told it is offline), so a test
    that asks for hub weights can never download, whatever the code under test does."""
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _tissue(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
    """A crude H&E-like patch: pink background with purple blobs, darker/denser for class 1."""
    img = np.ones((size, size, 3)) * np.array([0.93, 0.75, 0.85])
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12 if dark else 4):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 5 if dark else 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = [0.35, 0.2, 0.55] if dark else [0.55, 0.4, 0.7]
    img += rng.normal(0, 0.03, img.shape)
    return (img.clip(0, 1) * 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/<class>/*.png``: 2 classes x 12 images of 48 px, plus one grayscale, one RGBA and one corrupt file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, dark in (("benign", False), ("tumour", True)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(_tissue(rng, 48, dark)).save(root / label / f"{i}.png")
    Image.fromarray(_tissue(rng, 48, False)).convert("L").save(root / "benign" / "gray.png")
    Image.fromarray(_tissue(rng, 48, True)).convert("RGBA").save(root / "tumour" / "rgba.png")
    (root / "tumour" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root
