"""Training and inference throughput on one CUDA GPU: ssmamba beside the encoders a user would otherwise pick.

One training step = forward, cross-entropy, backward and an AdamW update on a random batch under bf16 autocast, as
``ssmamba finetune --device cuda --precision bf16`` does it; inference = a bf16 forward under
``torch.inference_mode``. Median of ``--repeats`` steps after warm-up (which also absorbs ``torch.compile`` of the
scan's chunk loop), CUDA-synchronised wall time, and the peak memory PyTorch allocated. Ratios against resnet50,
measured in the same run, are what to read. Writes ``gpu_train.md`` and ``.json`` into ``--out``.

    python benchmarks/gpu_train.py --out benchmarks/results     # a few minutes on one GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import ssmamba
from ssmamba.ops import backend_report

MODELS = ["resnet50", "vit_small_patch16_224", "convnext_tiny", "ssmamba_tiny_fast", "ssmamba_tiny", "ssmamba_small"]
BASELINE = "resnet50"


def build(name: str) -> torch.nn.Module:
    if name.startswith("ssmamba"):
        return ssmamba.create_model(name, num_classes=4)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=4)


def timed(step, repeats: int, warmup: int) -> float:
    """Median seconds of `step()` after `warmup` untimed calls, synchronising the GPU around each."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steps(name: str, size: int, batch: int) -> tuple[torch.nn.Module, Callable[[], None], Callable[[], None]]:
    """(model, one training step, one inference forward) on a random batch, as described above."""
    torch.manual_seed(0)
    model = build(name).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,), device="cuda")

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()

    def infer_step():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)

    return model, train_step, infer_step


def measure(name: str, size: int, batch: int, repeats: int) -> dict:
    model, train_step, infer_step = steps(name, size, batch)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    train_s = timed(train_step, repeats, warmup=3)
    train_peak = torch.cuda.max_memory_allocated()
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    infer_s = timed(infer_step, repeats, warmup=2)
    infer_peak = torch.cuda.max_memory_allocated()
    params = sum(p.numel() for p in model.parameters())
    del model, train_step, infer_step
    torch.cuda.empty_cache()
    return dict(model=name, size=size, batch=batch, params_m=params / 1e6, train_img_s=batch / train_s,
                infer_img_s=batch / infer_s, train_peak_gib=train_peak / 2**30, infer_peak_gib=infer_peak / 2**30)


def profile_table(name: str, size: int, batch: int, rows: int = 25) -> str:
    """torch.profiler's table of three training steps of `name` after warm-up: the ops by their own GPU time."""
    from torch.profiler import ProfilerActivity, profile

    model, train_step, _ = steps(name, size, batch)
    model.train()
    for _ in range(3):
        train_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            train_step()
        torch.cuda.synchronize()
    del model, train_step
    torch.cuda.empty_cache()
    return prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--profile", metavar="MODEL", help="also write gpu_train_profile.md: where three training "
                        "steps of MODEL (the first size) spend their GPU time")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train.py needs a CUDA device")
    scan = next(why for name, ok, why in backend_report() if name == "cuda")
    rows = []
    for size in args.sizes:
        for name in args.models:
            row = measure(name, size, args.batch, args.repeats)
            rows.append(row)
            print(f"{name:24s} {size:4d} px  train {row['train_img_s']:8.1f} img/s  infer {row['infer_img_s']:8.1f} "
                  f"img/s  peak {row['train_peak_gib']:.2f} GiB", flush=True)
    base = {r["size"]: r for r in rows if r["model"] == BASELINE}
    lines = ["# Throughput on one GPU", "",
             f"`python benchmarks/gpu_train.py`: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 "
             f"autocast, batch {args.batch}, channels-last, median of {args.repeats} steps. Scan: {scan}.", "",
             f"| model | px | params (M) | train img/s | vs {BASELINE} | infer img/s | vs {BASELINE} | "
             "train peak GiB | infer peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base.get(r["size"])
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['train_img_s']:.0f} | "
            f"{r['train_img_s'] / b['train_img_s']:.2f}x | {r['infer_img_s']:.0f} | "
            f"{r['infer_img_s'] / b['infer_img_s']:.2f}x | {r['train_peak_gib']:.2f} | {r['infer_peak_gib']:.2f} |"
            if b else f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['train_img_s']:.0f} | - | "
            f"{r['infer_img_s']:.0f} | - | {r['train_peak_gib']:.2f} | {r['infer_peak_gib']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_train.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu_train.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    if args.profile:
        table = profile_table(args.profile, args.sizes[0], args.batch)
        (args.out / "gpu_train_profile.md").write_text(
            f"# Where a training step's GPU time goes: {args.profile}, {args.sizes[0]} px, batch {args.batch}\n\n"
            f"`python benchmarks/gpu_train.py --profile {args.profile}` on {torch.cuda.get_device_name()}; three "
            f"steps, bf16 autocast. Scan: {scan}.\n\n```\n{table}\n```\n")
        print(table)


if __name__ == "__main__":
    main()
