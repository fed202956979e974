"""Run set-up shared by every command: seeding, logging to the run folder, the device."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ssmamba.io.distributed import barrier, process_group, processes
from ssmamba.io.runs import claim_run_dir, run_lock

__all__ = ["seed_everything", "add_file_log", "file_log", "run_folder", "training_run", "start_run", "resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU when there is one, else the CPU; anything else as ``torch.device`` reads it
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``). Asking for CUDA on a machine without it is an error that says so."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this PyTorch build sees no CUDA GPU; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def add_file_log(path: Path, level: int = logging.INFO) -> logging.Handler | None:
    """Also log ``ssmamba.*`` messages to ``path`` (appending, so a resumed run keeps its history). Returns the new
    handler, or None when ``path`` is logged to already."""
    root = logging.getLogger("ssmamba")
    root.setLevel(min(root.level or level, level))
    path = Path(path).resolve()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        return None
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler


@contextmanager
def file_log(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """:func:`add_file_log` for the duration of a run: the handler is removed and closed at the end, so runs made
    one after another in one process (a benchmark, a notebook) each log to their own file only."""
    handler = add_file_log(path, level)
    try:
        yield
    finally:
        if handler is not None:
            logging.getLogger("ssmamba").removeHandler(handler)
            handler.close()


@contextmanager
def run_folder(out: str | Path, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Lock and claim ``out`` for a run (new or empty unless ``resume`` or ``overwrite``: see ``claim_run_dir``;
    another process in it is refused: ``run_lock``) and log to its ``log.txt`` while the run lasts. Under torchrun,
    rank 0 locks, claims and logs; the others wait until it has."""
    if not processes().is_main:
        barrier()
        yield Path(out)
        return
    with run_lock(out, resume=resume):  # one process at a time in a run folder
        folder = claim_run_dir(out, resume=resume, overwrite=overwrite)
        barrier()
        with file_log(folder / "log.txt"):
            yield folder


@contextmanager
def training_run(out: str | Path, device: str, resume: bool, overwrite: bool) -> Iterator[tuple[Path, torch.device]]:
    """:func:`run_folder` inside the torchrun job of this process (if any): yields the claimed folder and this
    process's device (its own GPU under torchrun)."""
    with process_group(resolve_device(device)) as local, run_folder(out, resume, overwrite) as folder:
        yield folder, local


def start_run(seed: int, threads: int | None = None) -> None:
    """What every training run does first: torch's CPU threads (when asked for), then every random seed."""
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
