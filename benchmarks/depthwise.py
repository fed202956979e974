"""Depthwise convolutions under CPU bfloat16 autocast: why ssmamba computes them in float32, and what that buys.

    python benchmarks/depthwise.py --baseline-src OLD/src     # the model's training step, this code vs OLD

Part 1: forward + backward of one depthwise convolution (batch 64 at the 64-px grids, 16 at the 224-px ones; the
kernels of LPR (3x3) and of the DMS mixer (3/5/7 merged into 7x7)), in bfloat16 under autocast and in float32, on one
thread, CPU time, median of 5 after 2 warm-ups. Part 2: ssmamba_tiny's bf16 training step (``speed.py``'s case:
forward, loss, backward, AdamW; channels-last) as images per CPU-second, as a fraction of ResNet-18's in the same
process, for this checkout and for ``--baseline-src``, alternating. Writes ``benchmarks/results/depthwise.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment_lines, markdown_table, write_markdown_and_json  # noqa: E402
from speed import SRC, _child  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# (label, batch, channels, grid side, kernel): ssmamba_tiny's state-space stages at 64 px (4x4, 2x2) and 224 px
SHAPES = [("64 px, stage 3, DMS", 64, 192, 4, 7), ("64 px, stage 3, LPR", 64, 192, 4, 3),
          ("64 px, stage 4, DMS", 64, 384, 2, 7), ("64 px, stage 4, LPR", 64, 384, 2, 3),
          ("224 px, stage 3, DMS", 16, 192, 14, 7), ("224 px, stage 3, LPR", 16, 192, 14, 3),
          ("224 px, stage 4, DMS", 16, 384, 7, 7), ("224 px, stage 4, LPR", 16, 384, 7, 3)]


def conv_ms(batch: int, channels: int, side: int, kernel: int, bf16: bool, repeats: int = 5) -> float:
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(channels, 1, kernel, kernel, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = F.conv2d(x, weight, bias, padding=kernel // 2, groups=channels)
        out.float().sum().backward()

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="an older checkout's src/ to compare the training step with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    convs = []
    for label, batch, channels, side, kernel in SHAPES:
        fp32, bf16 = (conv_ms(batch, channels, side, kernel, b) for b in (False, True))
        convs.append({"shape": label, "batch": batch, "channels": channels, "grid": side, "kernel": kernel,
                      "fp32_ms": fp32, "bf16_ms": bf16})
        print(f"{label:22s} fp32 {fp32:6.2f} ms  bf16 {bf16:6.2f} ms  bf16/fp32 {bf16 / fp32:.2f}", flush=True)
    sources = {"this": SRC} | ({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})
    steps = []
    for size in args.sizes:
        batch = 64 if size <= 96 else 16
        for label, src in sources.items():
            r = _child("train", dict(size=size, batch=batch, bf16=True, repeats=args.repeats), src, "PASSIVE", 1)
            steps.append({"code": label, "size": size, "batch": batch} | r)
            print(f"train {label:8s} {size} px bf16: {r['ssmamba_img_per_cpu_s'] / r['resnet18_img_per_cpu_s']:.2f}x "
                  "ResNet-18", flush=True)
    lines = ["# Depthwise convolutions under CPU bfloat16 autocast", "",
             f"Command: `python benchmarks/depthwise.py{' --baseline-src ...' if args.baseline_src else ''}`; one "
             f"thread, CPU time; load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after.", "",
             *environment_lines(), "",
             "## One depthwise conv, forward + backward (ms, median of 5)", "",
             markdown_table(["shape", "batch", "channels", "grid", "kernel", "fp32 ms", "bf16 autocast ms",
                             "bf16 / fp32"],
                            [(c["shape"], c["batch"], c["channels"], f"{c['grid']}x{c['grid']}", c["kernel"],
                              f"{c['fp32_ms']:.2f}", f"{c['bf16_ms']:.2f}", f"{c['bf16_ms'] / c['fp32_ms']:.2f}x")
                             for c in convs]), "",
             "## ssmamba_tiny training step in bf16 autocast, images per CPU-second", "",
             "`this` computes the depthwise convs in float32 under autocast (`ssmamba.models.depthwise`); `baseline` "
             "is the code given as `--baseline-src`. Each row's two models ran in one process, alternating.", "",
             markdown_table(["code", "px", "batch", "ssmamba_tiny", "ResNet-18", "ssmamba / ResNet-18"],
                            [(s["code"], s["size"], s["batch"], f"{s['ssmamba_img_per_cpu_s']:.1f}",
                              f"{s['resnet18_img_per_cpu_s']:.1f}",
                              f"{s['ssmamba_img_per_cpu_s'] / s['resnet18_img_per_cpu_s']:.2f}x") for s in steps]), ""]
    write_markdown_and_json(RESULTS, "depthwise", lines, {"convs": convs, "steps": steps})


if __name__ == "__main__":
    main()
