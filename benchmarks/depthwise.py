"""Depthwise convolutions on CPU: oneDNN in float32 and in bfloat16, and ``ssmamba.ops.depthwise``; what they buy.

    python benchmarks/depthwise.py --baseline-src OLD/src     # the models' training step, this code vs OLD

Part 1: forward + backward of one depthwise convolution (batch 64 at the 64-px grids, 16 at the 224-px ones; the
kernels of LPR (3x3) and of the DMS mixer (3/5/7 merged into 7x7)): ``F.conv2d`` (oneDNN) in float32 and in bfloat16
under autocast, and ``ssmamba.ops.depthwise.depthwise_conv2d`` (our kernels: forward, input and weight gradients, in
the input's dtype; for the DMS 7x7, the (3, 5, 7) radii of its three channel groups), on one thread, CPU time, median of 5 after 2 warm-ups. Part 2: the training step (``speed.py``'s
case: forward, loss, backward, AdamW; channels-last) of the default model and of ssmamba_tiny, in float32 and in
bfloat16, as images per CPU-second, as a fraction of ResNet-18's in the same process, for this checkout and for
``--baseline-src``, alternating. Part 3: the same step of the default model in one process with our kernels and
with oneDNN's convolution (float32 under autocast, as the fallback runs it), alternating step by step (no second process, so the least noisy comparison).
Writes ``benchmarks/results/depthwise.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (case_in_child, environment_lines, markdown_table, median_seconds,  # noqa: E402
                    write_markdown_and_json)
from speed import MODELS, SRC, _child  # noqa: E402

from ssmamba.ops.depthwise import depthwise_conv2d  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# (label, batch, channels, grid side, kernel): ssmamba_tiny's state-space stages at 64 px (4x4, 2x2) and 224 px
SHAPES = [("64 px, stage 3, DMS", 64, 192, 4, 7), ("64 px, stage 3, LPR", 64, 192, 4, 3),
          ("64 px, stage 4, DMS", 64, 384, 2, 7), ("64 px, stage 4, LPR", 64, 384, 2, 3),
          ("224 px, stage 3, DMS", 16, 192, 14, 7), ("224 px, stage 3, LPR", 16, 192, 14, 3),
          ("224 px, stage 4, DMS", 16, 384, 7, 7), ("224 px, stage 4, LPR", 16, 384, 7, 3)]


def conv_ms(batch: int, channels: int, side: int, kernel: int, bf16: bool, conv=None, repeats: int = 5) -> float:
    """fwd+bwd milliseconds of ``conv(x, weight, bias)`` (default: oneDNN's grouped ``F.conv2d``)."""
    conv = conv or (lambda x, w, b: F.conv2d(x, w, b, padding=kernel // 2, groups=channels))
    if conv is depthwise_conv2d and kernel == 7:  # the DMS conv: three channel groups of radius 1, 2, 3
        radii = torch.arange(channels) * 3 // channels + 1
        conv = lambda x, w, b: depthwise_conv2d(x, w, b, radii)  # noqa: E731
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(channels, 1, kernel, kernel, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)
    grad_out = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)  # dense, as in training

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = conv(x, weight, bias)
        torch.autograd.grad(out.float(), (x, weight, bias), grad_out)

    return 1e3 * median_seconds(step, repeats, warmup=2, clock=time.process_time)


def kernel_ab_case(size: int, batch: int, bf16: bool, repeats: int) -> dict:
    """Training-step seconds of the default model with our depthwise kernels and with oneDNN's conv, alternating."""
    import timm  # noqa: F401  (as speed.py: torch and timm before ssmamba)

    from speed import _alternate, training_step

    from ssmamba.models import create_model
    from ssmamba.ops import depthwise
    from ssmamba.train.config import DEFAULT_MODEL

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    step = training_step(create_model(DEFAULT_MODEL, num_classes=4), x, torch.randint(0, 4, (batch,)), bf16)
    ours = depthwise.depthwise_conv2d_cpu

    def with_weight_grad(conv):
        def run():
            depthwise.depthwise_conv2d_cpu = conv
            try:
                step()
            finally:
                depthwise.depthwise_conv2d_cpu = ours
        return run

    def onednn_fp32(x, w, b, radii=None):
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x.float(), w.float(), b.float(), padding=w.shape[-1] // 2, groups=x.shape[1])

    onednn = with_weight_grad(onednn_fp32)
    return _alternate({"ssmamba": with_weight_grad(ours), "oneDNN": onednn}, repeats, time.process_time)


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
        ours, ours16 = (conv_ms(batch, channels, side, kernel, b, depthwise_conv2d) for b in (False, True))
        convs.append({"shape": label, "batch": batch, "channels": channels, "grid": side, "kernel": kernel,
                      "fp32_ms": fp32, "bf16_ms": bf16, "ssmamba_ms": ours, "ssmamba_bf16_ms": ours16})
        print(f"{label:22s} oneDNN fp32 {fp32:6.2f} ms  bf16 {bf16:6.2f} ms  ssmamba {ours:6.2f} ms  "
              f"ssmamba bf16 {ours16:6.2f} ms", flush=True)
    sources = {"this": SRC} | ({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})
    steps = []
    for size in args.sizes:
        batch = 64 if size <= 96 else 16
        for bf16 in (False, True):
            for label, src in sources.items():
                r = _child("train", dict(size=size, batch=batch, bf16=bf16, repeats=args.repeats, models=MODELS), src,
                           "PASSIVE", 1)  # fmt: skip
                steps.append({"code": label, "size": size, "batch": batch, "bf16": bf16, "img_per_cpu_s": r})
                print(f"train {label:8s} {size} px {'bf16' if bf16 else 'fp32'}: " + ", ".join(
                    f"{m} {r[m] / r['resnet18']:.2f}x" for m in MODELS) + " ResNet-18", flush=True)
    kernel_ab = []
    for size in args.sizes:
        batch = 64 if size <= 96 else 16
        for bf16 in (False, True):
            r = case_in_child("depthwise", "kernel_ab_case", dict(size=size, batch=batch, bf16=bf16,
                                                                         repeats=2 * args.repeats), SRC)
            kernel_ab.append({"size": size, "batch": batch, "bf16": bf16, "seconds": r})
            print(f"default model {size} px {'bf16' if bf16 else 'fp32'}: step {r['oneDNN'] / r['ssmamba']:.3f}x as "
                  "fast with our kernels", flush=True)
    lines = ["# Depthwise convolutions on CPU", "",
             f"Command: `python benchmarks/depthwise.py{' --baseline-src ...' if args.baseline_src else ''}`; one "
             f"thread, CPU time; load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after.", "",
             *environment_lines(), "",
             "## One depthwise conv, forward + backward (ms, median of 5)", "",
             "oneDNN: `F.conv2d(groups=C)`, float32 and bfloat16 autocast. ssmamba: `ssmamba.ops.depthwise`, our "
             "kernels (the DMS 7x7 with the radii 1, 2, 3 of its channel groups), float32 input, and bfloat16 "
             "autocast (the float32 input as it is: autocast does not cast the conv's input).", "",
             markdown_table(["shape", "batch", "channels", "grid", "kernel", "oneDNN fp32 ms", "oneDNN bf16 ms",
                             "ssmamba fp32 ms", "ssmamba bf16 autocast ms", "oneDNN fp32 / ssmamba fp32"],
                            [(c["shape"], c["batch"], c["channels"], f"{c['grid']}x{c['grid']}", c["kernel"],
                              f"{c['fp32_ms']:.2f}", f"{c['bf16_ms']:.2f}", f"{c['ssmamba_ms']:.2f}",
                              f"{c['ssmamba_bf16_ms']:.2f}", f"{c['fp32_ms'] / c['ssmamba_ms']:.2f}x")
                             for c in convs]), "",
             "## Training step, images per CPU-second", "",
             "`this` is this checkout, `baseline` the code given as `--baseline-src`. Each row's models ran in one "
             "process, alternating; ratios are to ResNet-18 in that process.", "",
             markdown_table(["code", "px", "batch", "precision", "ResNet-18", *MODELS,
                             *(f"{m} / ResNet-18" for m in MODELS)],
                            [(s["code"], s["size"], s["batch"], "bf16 autocast" if s["bf16"] else "fp32",
                              f"{s['img_per_cpu_s']['resnet18']:.1f}",
                              *(f"{s['img_per_cpu_s'][m]:.1f}" for m in MODELS),
                              *(f"{s['img_per_cpu_s'][m] / s['img_per_cpu_s']['resnet18']:.2f}x" for m in MODELS))
                             for s in steps]), "",
             "## The default model's training step: our depthwise kernels against oneDNN's conv, in one process", "",
             f"Steps alternate between the two (median of {2 * args.repeats}); everything else is identical.", "",
             markdown_table(["px", "batch", "precision", "oneDNN conv (float32) s", "ssmamba kernels s",
                             "step speed-up"],
                            [(k["size"], k["batch"], "bf16 autocast" if k["bf16"] else "fp32",
                              f"{k['seconds']['oneDNN']:.3f}", f"{k['seconds']['ssmamba']:.3f}",
                              f"{k['seconds']['oneDNN'] / k['seconds']['ssmamba']:.3f}x") for k in kernel_ab]), ""]
    write_markdown_and_json(RESULTS, "depthwise", lines, {"convs": convs, "steps": steps, "kernel_ab": kernel_ab})


if __name__ == "__main__":
    main()
