"""The DMS directional scan on one CUDA GPU: the in-place Triton kernels against the reordering path they replace.

Forward + backward of ``directional_scan`` at the mixer's shapes, bf16 u, Δ, B, C as under autocast (channels at
stride 1, Δ, B and C as views of their projections): ``directional_triton`` (the cuda path without mamba_ssm)
against ``directional_scan_reordered`` around ``selective_scan_cuda`` with mamba_ssm disabled (gathered copies,
bias, softplus and D as PyTorch ops, the plain Triton recurrence), which was the path before. Median of
``--repeats`` after warm-up (which also absorbs Triton's compiles), CUDA-synchronised. Writes
``gpu_directional.md`` and ``.json`` into ``--out``.

    python benchmarks/gpu_directional.py --out benchmarks/results     # under a minute on one GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_train import timed  # noqa: E402

from ssmamba.ops import scan_cuda  # noqa: E402
from ssmamba.ops.directional import direction_orders, directional_scan_reordered  # noqa: E402
from ssmamba.ops.directional_triton import directional_scan_triton  # noqa: E402

FOUR = ("row", "row_reverse", "column", "column_reverse")
# (label, batch, channels, grid side, directions, scalar A): stage 3 of the default model and of ssmamba_tiny
SHAPES = [("default model, 224 px, stage 3", 64, 192, 14, FOUR[:2], True),
          ("ssmamba_tiny, 224 px, stage 3", 64, 192, 14, FOUR, False),
          ("default model, 64 px, stage 3", 256, 192, 4, FOUR[:2], True),
          ("default model, 896 px inference grid, stage 3", 4, 192, 56, FOUR[:2], True)]


def inputs(batch: int, channels: int, side: int, directions, scalar: bool, state: int = 16) -> tuple[list, dict]:
    k, length = len(directions), side * side
    device, bf16 = "cuda", torch.bfloat16
    u = torch.randn(batch, length, channels, device=device, dtype=bf16).transpose(1, 2)
    delta = (torch.randn(k, batch, length, channels, device=device) * 0.5 - 2).to(bf16).permute(1, 0, 3, 2)
    bc = torch.randn(batch, length, k, 2 * state, device=device, dtype=bf16)
    A = -torch.exp(torch.randn(k, channels, 1 if scalar else state, device=device) * 0.5)
    tensors = [u, delta, A, bc[..., :state].permute(0, 2, 3, 1), bc[..., state:].permute(0, 2, 3, 1),
               torch.randn(k, channels, device=device), torch.randn(k, channels, device=device) * 0.1]
    return [t.detach().requires_grad_() for t in tensors], dict(delta_softplus=True, directions=directions,
                                                                 height=side, width=side)


def reordered(*args, **kwargs):
    """The path before: mamba_ssm off, so selective_scan_cuda runs the plain Triton recurrence."""
    original = scan_cuda.mamba_ssm_scan
    scan_cuda.mamba_ssm_scan = lambda: (None, "disabled by the benchmark")
    try:
        return directional_scan_reordered(scan_cuda.selective_scan_cuda, *args, **kwargs)
    finally:
        scan_cuda.mamba_ssm_scan = original


def seconds(scan, tensors, kwargs, repeats: int) -> float:
    grad = torch.randn(tensors[0].shape, device="cuda", dtype=torch.bfloat16)

    def step():
        out = scan(*tensors, **kwargs)
        torch.autograd.grad(out, tensors, grad)

    return timed(step, repeats, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    rows = []
    for label, batch, channels, side, directions, scalar in SHAPES:
        tensors, kwargs = inputs(batch, channels, side, directions, scalar)
        direction_orders(directions, side, side, "cuda")  # cached before timing, for both paths
        new = seconds(directional_scan_triton, tensors, kwargs, args.repeats)
        old = seconds(reordered, tensors, kwargs, args.repeats)
        rows.append({"shape": label, "batch": batch, "channels": channels, "grid": side, "directions": len(directions),
                     "scalar_A": scalar, "in_place_ms": 1e3 * new, "reordered_ms": 1e3 * old})  # fmt: skip
        print(f"{label:48s} in place {1e3 * new:8.2f} ms, reordered {1e3 * old:8.2f} ms, {old / new:.2f}x", flush=True)
    lines = ["# Directional scan on a GPU: in-place Triton kernels vs the reordering path", "",
             f"`python benchmarks/gpu_directional.py --repeats {args.repeats}` on {torch.cuda.get_device_name()}; "
             "forward + backward, bf16 inputs, median ms.", "",
             "| shape | batch | channels | grid | K | scalar A | in place ms | reordered ms | speed-up |",
             "|---|---|---|---|---|---|---|---|---|",
             *(f"| {r['shape']} | {r['batch']} | {r['channels']} | {r['grid']}x{r['grid']} | {r['directions']} | "
               f"{r['scalar_A']} | {r['in_place_ms']:.2f} | {r['reordered_ms']:.2f} | "
               f"{r['reordered_ms'] / r['in_place_ms']:.2f}x |" for r in rows), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_directional.md").write_text("\n".join(lines))
    (args.out / "gpu_directional.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out / 'gpu_directional.md'}")


if __name__ == "__main__":
    main()
