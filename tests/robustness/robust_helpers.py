"""Helpers of the robustness suite: tiny images, digests of what must not change, the in-process CLI."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ssmamba.cli import main

SIZE = 32
CLASSES = ("benign", "tumour")


def tile(rng: np.random.Generator, dark: bool) -> np.ndarray:
    """A 32 px pink patch with purple blobs (more, darker ones for the second class)."""
    img = np.ones((SIZE, SIZE, 3)) * np.array([0.93, 0.75, 0.85])
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(8 if dark else 3):
        cy, cx, r = rng.uniform(0, SIZE, 2).tolist() + [rng.uniform(2, 4)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = [0.35, 0.2, 0.55] if dark else [0.55, 0.4, 0.7]
    img += rng.normal(0, 0.03, img.shape)
    return (img.clip(0, 1) * 255).astype(np.uint8)


def write_manifest(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"][: len(rows[0])] if rows else ["path", "label", "split"])
        writer.writerows(rows)
    return path


def digest(*paths: Path) -> dict[str, str]:
    """sha1 of every file under ``paths`` (files or folders), keyed by path: what a case must not change."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            out[str(file)] = hashlib.sha1(file.read_bytes()).hexdigest()
    return out


def cli(*args):
    """Run ``ssmamba ARGS`` in-process; exceptions that escape show up as a non-zero exit without an Error: line."""
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The single ``Error:`` line of a failed command (asserting there is exactly one and no traceback)."""
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, f"expected one Error: line, got:\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output, result.output
    return lines[0]


@dataclass
class Assets:
    root: Path
    images: Path  # <class>/*.png, 8 per class
    manifest: Path  # path,label,split over the images: 4 train, 2 val, 2 test per class
    checkpoint: Path  # ssmamba_test with a 2-class head and class_names
    encoder: Path  # ssmamba_test without a head
    run: Path  # a finished 1-epoch fine-tuning run (best/, last/, training_state.pt, ...)
    pre: Path  # a finished 1-epoch (2-step) MAMIM pretraining run (checkpoint/, training_state.pt, ...)

    def finetune_args(self, out: Path, *extra) -> list:
        return ["finetune", "--data", self.manifest, "--out", out, "--model", "ssmamba_test", "--img-size", SIZE,
                "--crop-size", SIZE, "--epochs", 1, "--batch-size", 4, "--no-progress", *extra]

    def pretrain_args(self, out: Path, *extra) -> list:
        return ["pretrain", "--data", self.images, "--out", out, "--model", "ssmamba_test", "--img-size", SIZE,
                "--crop-size", SIZE, "--mask-patch-size", 8, "--epochs", 1, "--batch-size", 8, "--no-progress",
                *extra]


