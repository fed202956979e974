"""Throughput of the data and evaluation pieces on this machine: prints a table, writes results/data.md.

    python benchmarks/bench_data.py [--quick]

Measures synthetic patch generation (rendering and writing PNGs), augmentation pipelines, sample loading from the
real data sets beside the checkout (skipped when ``../shared/data`` is absent), file verification, and the
bootstrap of ``compute_metrics``. Single process, one worker, wall time (median of 3 runs).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssmamba.data import load_dataset
from ssmamba.data.synthetic import CLASSES, make_synthetic_dataset, render_patch
from ssmamba.data.transforms import eval_transform, pretrain_transform, train_transform
from ssmamba.eval.metrics import compute_metrics

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "data.md"


def median_seconds(fn, repeats: int = 3) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``repeats`` calls; CPU time is this process's, immune to other jobs."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def bench_synthetic(n: int) -> list[tuple[str, int, tuple[float, float]]]:
    rng = np.random.default_rng(0)
    rows = []
    for name in CLASSES:
        seconds = median_seconds(lambda name=name: [render_patch(name, 64, rng) for _ in range(n)])
        rows.append((f"render {name} 64 px", n, seconds))
    per_class = max(n // 5, 4)
    with tempfile.TemporaryDirectory() as folder:
        seconds = median_seconds(lambda: make_synthetic_dataset(folder, per_class, size=64, seed=0))
    rows.append(("make_synthetic_dataset 64 px (render + PNG + manifest)", per_class * 5, seconds))
    return rows


def bench_transforms(n: int) -> list[tuple[str, int, tuple[float, float]]]:
    images = [load_image(i) for i in range(8)]
    rows = []
    for label, pipeline in (("pretrain_transform(224), 96 px input", pretrain_transform(224)),
                            ("train_transform(224), 96 px input", train_transform(224)),
                            ("eval_transform(224), 96 px input", eval_transform(224)),
                            ("pretrain_transform(64), 96 px input", pretrain_transform(64))):
        seconds = median_seconds(lambda pipeline=pipeline: [pipeline(images[i % 8]) for i in range(n)])
        rows.append((label, n, seconds))
    return rows


def load_image(index: int):
    from PIL import Image

    return Image.fromarray(render_patch(CLASSES[index % 5], 96, np.random.default_rng(index)))


def bench_real(n: int) -> list[tuple[str, int, tuple[float, float]]]:
    if not SHARED_DATA.is_dir():
        return []
    rows = []
    cases = (("idc/labels.csv test, 50 px PNG", SHARED_DATA / "idc" / "labels.csv", {}),
             ("pcam1000/labels.csv train, 96 px PNG", SHARED_DATA / "pcam1000" / "labels.csv", {}),
             ("crchp/nuclei.csv train, 32 px crops", SHARED_DATA / "crchp" / "nuclei.csv", {"crop_size": 32}))
    for label, source, options in cases:
        split = "test" if "idc" in label else "train"
        start, start_cpu = time.perf_counter(), time.process_time()
        dataset = load_dataset(source, split, verify=True, **options)
        seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
        rows.append((f"load_dataset + verify: {label}", len(dataset), seconds))
        count = min(n, len(dataset))
        order = np.random.default_rng(0).permutation(len(dataset))[:count]
        seconds = median_seconds(lambda dataset=dataset, order=order: [dataset[int(i)] for i in order])
        rows.append((f"read random samples: {label}", count, seconds))
    return rows


def bench_bootstrap() -> list[tuple[str, int, tuple[float, float]]]:
    rng = np.random.default_rng(0)
    rows = []
    for n, k in ((1000, 2), (1000, 4), (10000, 4)):
        y = rng.integers(0, k, n)
        probs = rng.dirichlet(np.ones(k), n)
        seconds = median_seconds(lambda y=y, probs=probs, k=k: compute_metrics(y, probs, [str(i) for i in range(k)],
                                                                                n_bootstrap=1000))
        rows.append((f"compute_metrics, {n} cases, {k} classes, 1000 resamples", 1, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples per case")
    args = parser.parse_args()
    n = 100 if args.quick else 400
    torch.set_num_threads(1)
    rows = bench_synthetic(n) + bench_transforms(n) + bench_real(n) + bench_bootstrap()
    header = "| case | items | wall s | items/s (wall) | items/s (CPU) |\n|---|---:|---:|---:|---:|"
    lines = [f"| {label} | {count:,} | {wall:.3f} | {count / wall:,.0f} | {count / max(cpu, 1e-9):,.0f} |"
             for label, count, (wall, cpu) in rows]
    table = "\n".join([header, *lines])
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Data and evaluation throughput\n\n"
        f"`python benchmarks/bench_data.py{' --quick' if args.quick else ''}` on "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, one process "
        "(no DataLoader workers), median of 3. The machine is shared with other jobs: wall rates are lower bounds, "
        "CPU rates (this process's CPU time; verification runs on threads, so its CPU time exceeds wall time) are "
        "what one free core does. Random reads of nucleus crops are with a warm parent cache.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
