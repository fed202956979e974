"""Data-parallel scaling: MAMIM pretraining throughput with 1 and 2 processes under torchrun (gloo on the CPU).

Each case runs ``torchrun --standalone --nproc-per-node P -m ssmamba pretrain`` on generated images with the same
batch per process (so P processes take P times the images per step) and reads the images per second that the run
logs every ``--log-every`` steps (global images, start-up excluded); the median over the logged intervals after the
first. Also one process with as many torch threads as the 2-process case uses cores, the fair single-process
alternative on the same cores. On a shared machine read the ratios. Writes ``benchmarks/results/scaling.md`` and
``.json``.

    python benchmarks/scaling.py                 # about 5 minutes on 2 cores
    python benchmarks/scaling.py --device cuda --processes 1 2 4 --model ssmamba_tiny --img-size 224   # GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RATE = re.compile(r"step \d+/\d+ \(epoch \d+\): .* ([\d.]+) images/s")


def run(data: Path, out: Path, processes: int, threads: int, args) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "ssmamba", "pretrain", "--data", str(data), "--out", str(out), "--model", args.model,
               "--img-size", str(args.img_size), "--crop-size", str(args.img_size), "--mask-patch-size", "16",
               "--batch-size", str(args.batch_size), "--epochs", "1", "--threads", str(threads),
               "--device", args.device, "--no-progress", "--no-hed"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    rates = [float(m.group(1)) for m in RATE.finditer((out / "log.txt").read_text())]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="ssmamba_tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch of the largest case")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from ssmamba.data.synthetic import make_synthetic_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = args.steps * args.batch_size * max(args.processes)
        data = make_synthetic_dataset(Path(tmp) / "data", -(-images // 4), size=args.img_size, seed=0)
        cases = [(p, 1) for p in args.processes]
        if args.device == "cpu" and max(args.processes) > 1:
            cases.insert(1, (1, max(args.processes)))
        for processes, threads in cases:
            rate = run(data, Path(tmp) / f"p{processes}t{threads}", processes, threads, args)
            rows.append({"processes": processes, "threads_per_process": threads, "images_per_s": rate})
            print(f"{processes} process(es) x {threads} thread(s): {rate:7.1f} images/s", flush=True)
    base = rows[0]["images_per_s"]
    for row in rows:
        row["ratio"] = row["images_per_s"] / base
    import torch

    lines = ["# Data-parallel scaling (torchrun)", "",
             f"`python benchmarks/scaling.py`: MAMIM pretraining of `{args.model}` at {args.img_size} px, "
             f"{args.batch_size} images per process and step, device {args.device}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}. Global images per second logged by the run (start-up excluded); the "
             "ratio to one process with one thread is what to read.", "",
             "| processes | threads per process | images/s | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_s']:.1f} | {r['ratio']:.2f} |"
              for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "scaling.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
