"""Per-bag cost of `mil train` on CPU for small bags: milliseconds per training step and per scored bag.

A small slide set (the issue that prompted this: 58 bags of a few hundred tiles) spends its time on per-bag
overhead, not on arithmetic. This script times one fold's worth of training (``train_head``) and scoring
(``predict``) of each head on generated bags of that shape, in fresh processes, and compares two source trees
when given a baseline, alternating their runs so that a noisy machine affects both alike:

    git worktree add /tmp/mil_base <old commit>        # or any other checkout of the package
    python benchmarks/mil_speed.py --baseline /tmp/mil_base/src

It prints a table and writes ``benchmarks/results/mil_speed.md`` (and ``.json``). Ratios (baseline time / this
tree's time, median over repeats) are the numbers to read; absolute times depend on the machine and its load.
One process measures one (tree, head) cell: ``python benchmarks/mil_speed.py --cell HEAD`` prints its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADS = ("abmil", "transmil", "mamba_mil")


def make_bags(folder: Path, n_bags: int, dim: int, min_size: int, max_size: int, seed: int = 0) -> list[Path]:
    """``n_bags`` feature files of ``min_size``-``max_size`` tiles on a grid, label = bag index mod 2."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n_bags):
        size = int(rng.integers(min_size, max_size + 1))
        side = int(np.ceil(np.sqrt(size)))
        cells = rng.permutation(side * side)[:size]
        path = folder / f"bag_{index:03d}.h5"
        with h5py.File(path, "w") as h5:
            h5["features"] = rng.normal(size=(size, dim)).astype(np.float32) + (index % 2) * 0.1
            h5["coords"] = np.stack([cells % side, cells // side], 1).astype(np.int64) * 256
        paths.append(path)
    return paths


def measure_cell(head_name: str, n_bags: int, dim: int, min_size: int, max_size: int, epochs: int,
                 threads: int) -> dict:
    """Per-bag milliseconds of a training epoch and of scoring every bag once, for one head: the fastest of
    ``epochs`` timed epochs (and as many scoring passes), the usual estimate on a machine with other load.

    ``threads`` 0 leaves torch's thread count alone (what a user who sets nothing gets). ssmamba is imported
    before torch, as the command line does, so its OpenMP settings take effect.
    """
    import ssmamba  # noqa: F401  (before torch: the CLI's OpenMP wait policy)
    import torch

    from ssmamba.mil import create_mil_head
    from ssmamba.mil.bags import BagDataset, BagRecord
    try:
        from ssmamba.mil.inference import predict
        from ssmamba.mil.training import MILTrainConfig, train_head
    except ModuleNotFoundError:  # a baseline from before MIL training moved onto the shared Trainer
        from ssmamba.mil.engine import MILTrainConfig, predict, train_head

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_bags(Path(tmp), n_bags, dim, min_size, max_size)
        dataset = BagDataset([BagRecord(p.stem, i % 2, p, p.stem) for i, p in enumerate(paths)])
        torch.manual_seed(0)
        head = create_mil_head(head_name, dim, 2)
        warm = BagDataset(dataset.records[:4])
        train_head(head, warm, MILTrainConfig(epochs=1, seed=0), progress=False)  # kernel build, allocator
        predict(head, warm)
        train, score, cpu = [], [], []
        for epoch in range(epochs):
            start, start_cpu = time.perf_counter(), time.process_time()
            train_head(head, dataset, MILTrainConfig(epochs=1, seed=epoch), progress=False)
            train.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            start = time.perf_counter()
            predict(head, dataset)
            score.append(time.perf_counter() - start)
    return {"head": head_name, "train_ms_per_bag": 1e3 * min(train) / n_bags,
            "train_cpu_ms_per_bag": 1e3 * min(cpu) / n_bags, "predict_ms_per_bag": 1e3 * min(score) / n_bags,
            "threads": threads or torch.get_num_threads()}


def _run_cell(src: Path, head: str, threads: int, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--cell", head, "--bags", str(args.bags),
               "--dim", str(args.dim), "--min-size", str(args.min_size), "--max-size", str(args.max_size),
               "--epochs", str(args.epochs), "--threads", str(threads)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _median(cells: list[dict], key: str) -> float:
    return statistics.median(c[key] for c in cells)


@contextlib.contextmanager
def busy_cores(count: int):
    """``count`` processes that keep a core busy each, as other jobs on a shared machine do."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def compare(args, threads: int, load: int = 0) -> list[dict]:
    """Median per-bag times of each head for this tree and (if given) the baseline, runs interleaved."""
    with busy_cores(load):
        return _compare(args, threads)


def _compare(args, threads: int) -> list[dict]:
    trees = {"this": REPO / "src"}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    runs = {(tree, head): [] for tree in trees for head in args.heads}
    for repeat in range(args.repeats):
        for head in args.heads:
            for tree, src in trees.items():
                cell = _run_cell(src, head, threads, args)
                runs[tree, head].append(cell)
                print(f"threads {threads or 'default'} repeat {repeat} {head:>9} {tree:>8}: train "
                      f"{cell['train_ms_per_bag']:7.1f} ms/bag, predict {cell['predict_ms_per_bag']:6.1f} ms/bag",
                      flush=True)
    rows = []
    for head in args.heads:
        row = {"head": head, "threads": threads,
               **{f"{tree}_{key}": _median(runs[tree, head], key) for tree in trees
                  for key in ("train_ms_per_bag", "train_cpu_ms_per_bag", "predict_ms_per_bag")}}
        if args.baseline:
            row["train_speedup"] = row["baseline_train_ms_per_bag"] / row["this_train_ms_per_bag"]
            row["predict_speedup"] = row["baseline_predict_ms_per_bag"] / row["this_predict_ms_per_bag"]
            row["train_cpu_ratio"] = row["baseline_train_cpu_ms_per_bag"] / row["this_train_cpu_ms_per_bag"]
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> list[str]:
    if "train_speedup" not in rows[0]:
        return ["| head | train ms/bag | train CPU ms/bag | predict ms/bag |", "|---|---:|---:|---:|"] + [
            f"| {r['head']} | {r['this_train_ms_per_bag']:.1f} | {r['this_train_cpu_ms_per_bag']:.1f} | "
            f"{r['this_predict_ms_per_bag']:.1f} |" for r in rows]
    lines = ["| head | train ms/bag: baseline | now | **speed-up** | train CPU ms/bag: baseline | now | **ratio** "
             "| predict ms/bag: baseline | now | **speed-up** |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    return lines + [f"| {r['head']} | {r['baseline_train_ms_per_bag']:.1f} | {r['this_train_ms_per_bag']:.1f} | "
                    f"**{r['train_speedup']:.2f}x** | {r['baseline_train_cpu_ms_per_bag']:.1f} | "
                    f"{r['this_train_cpu_ms_per_bag']:.1f} | **{r['train_cpu_ratio']:.2f}x** | "
                    f"{r['baseline_predict_ms_per_bag']:.1f} | {r['this_predict_ms_per_bag']:.1f} | "
                    f"**{r['predict_speedup']:.2f}x** |" for r in rows]


def to_markdown(tables: dict[int, list[dict]], args) -> str:
    has_baseline = bool(args.baseline)
    lines = ["# MIL training and scoring speed on CPU, small bags", "",
             f"{args.bags} generated bags of {args.min_size}-{args.max_size} tiles, {args.dim}-d features (the "
             f"shape of a small TMA or crop MIL set), one bag per step; per cell the fastest of {args.epochs} timed "
             f"epochs in each of {args.repeats} fresh processes, median over the processes"
             + (", baseline and this tree alternating" if has_baseline else "") + f". Date {datetime.date.today()}, "
             f"{os.cpu_count()} CPU cores (shared with other jobs: absolute times are noisy, ratios less so).", ""]
    if has_baseline:
        lines += [f"Baseline: `{args.baseline_label or args.baseline}`.", ""]
    for (threads, load), rows in tables.items():
        title = (f"{threads} torch thread(s) forced (OMP_NUM_THREADS={threads})" if threads
                 else "torch threads left at their default (nothing set: what a user meets)")
        if load:
            title += f", while {load} other process(es) keep a core busy"
        lines += [f"## {title}", "", *_table(rows), ""]
    lines += ["Wall time is what a run takes; CPU time (all threads together) is the work done, and is far less "
              "disturbed by other jobs on the machine. A 5-fold CV of E epochs over B bags takes about "
              "0.8 x E x B x (train ms/bag) + B x (predict ms/bag).",
              "", "Command: `python benchmarks/mil_speed.py" + (" --baseline SRC" if has_baseline else "")
              + f" --bags {args.bags} --epochs {args.epochs} --repeats {args.repeats} --scenarios "
              + " ".join(f"{t}:{b}" for t, b in tables) + "`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="src folder of another checkout to compare with")
    parser.add_argument("--baseline-label", help="how to name the baseline in the results (e.g. a commit)")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--bags", type=int, default=58)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--min-size", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process (the fastest counts)")
    parser.add_argument("--scenarios", nargs="+", default=["0:0", "1:0", "0:1"],
                        help="THREADS:BUSY pairs: torch threads (0: torch's default) and how many other processes "
                             "keep a core busy meanwhile")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # of one --cell
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "mil_speed.md")
    parser.add_argument("--cell", choices=HEADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(measure_cell(args.cell, args.bags, args.dim, args.min_size, args.max_size, args.epochs,
                                      args.threads)))
        return
    scenarios = [tuple(int(v) for v in item.split(":")) for item in args.scenarios]
    tables = {(threads, load): compare(args, threads, load) for threads, load in scenarios}
    markdown = to_markdown(tables, args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(markdown)
    args.results.with_suffix(".json").write_text(json.dumps(
        {"tables": {f"threads={t} busy={b}": rows for (t, b), rows in tables.items()}, "args": vars(args)},
        indent=1, default=str))
    print(markdown)


if __name__ == "__main__":
    main()
