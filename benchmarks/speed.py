"""ssmamba's speed against the models a user would pick instead, measured the way a user meets it.

    python benchmarks/speed.py                               # this checkout only
    python benchmarks/speed.py --baseline-src ../main/src    # and an older checkout's ssmamba, side by side
    python benchmarks/speed.py --models ssmamba_tiny         # other variants (default: the default model and
                                                             # ssmamba_tiny, the full DMS)

Inference at 896 px (batch 1, fp32, eval, inference_mode) against ViT-S/16 (timm, random init, dynamic image
size), with ``import torch, timm, ssmamba`` in that order, with OpenMP's default wait policy and with
``OMP_WAIT_POLICY=PASSIVE``, while a busy-loop process holds one core. Training step (forward, cross-entropy,
backward, AdamW; channels-last) at 64 and 224 px against ResNet-18, in float32 and under bfloat16 autocast, as
images per CPU-second of the process. Every case is one fresh process that times both models in turn (A B A B),
so a ratio never mixes two machine states; with ``--baseline-src`` each case also runs once on that ssmamba,
in alternation. Plus a torch.profiler table of one forward of the first model (default wait policy, busy core) with the
share of the data-movement ops (copy_, cat, flip). Writes ``benchmarks/results/speed.md`` and ``speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["ssmamba_tiny_fast", "ssmamba_tiny"]  # the default model (ssmamba.train.config.DEFAULT_MODEL), the full DMS
SRC = Path(__file__).resolve().parents[1] / "src"
DATA_MOVEMENT = ("aten::copy_", "aten::cat", "aten::flip")


def _build(name: str, num_classes: int):
    import timm

    import ssmamba  # noqa: F401  (imported after torch and timm, like a user script)

    if name.startswith("ssmamba"):
        return ssmamba.create_model(name, num_classes=num_classes)
    kwargs = {"dynamic_img_size": True} if name.startswith("vit") else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def _alternate(steps: dict, repeats: int, clock) -> dict:
    """Run each step once to warm up, then `repeats` rounds of all steps in turn; median time of each."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = clock()
            step()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def inference_case(size: int, repeats: int, models: list[str]) -> dict:
    """Seconds per forward of each of ``models`` and of ViT-S/16, alternating."""
    import torch

    models = {name: _build(name, 1000).eval() for name in (*models, "vit_small_patch16_224")}
    x = torch.randn(1, 3, size, size)

    def step(model):
        def run():
            with torch.inference_mode():
                model(x)

        return run

    return _alternate({name: step(m) for name, m in models.items()}, repeats, time.perf_counter)


def training_step(model, x, y, bf16: bool):
    """One training step of ``model`` on ``(x, y)`` as a function: forward (under bf16 autocast if asked),
    cross-entropy, backward, AdamW (fused, as ssmamba's trainers use it: ``train.optim.adamw``, spelled out so that an
    older ``--baseline-src`` runs it too); the model channels-last in train mode."""
    import torch

    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.float().backward()
        optimizer.step()

    return run


def train_case(size: int, batch: int, bf16: bool, repeats: int, models: list[str]) -> dict:
    """Training images per CPU-second of each of ``models`` and of ResNet-18, alternating."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))

    steps = {name: training_step(_build(name, 4), x, y, bf16) for name in (*models, "resnet18")}
    return {name: batch / s for name, s in _alternate(steps, repeats, time.process_time).items()}


def profile_case(size: int, model: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = _build(model, 1000).eval()
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [(e.key, e.count, e.self_cpu_time_total / 1e6, e.self_cpu_time_total / total) for e in events[:12]]
    moved = {name: sum(e.self_cpu_time_total for e in events if e.key == name) / total for name in DATA_MOVEMENT}
    return {"total_s": total / 1e6, "top": rows, "data_movement_share": moved}


def _child(kind: str, args: dict, src: Path, wait_policy: str | None, threads: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import case_in_child

    return case_in_child("speed", f"{kind}_case", args, src, threads, wait_policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="an older checkout's src/ to measure side by side")
    parser.add_argument("--models", nargs="+", default=MODELS, help="ssmamba variants (the first is profiled)")
    parser.add_argument("--size", type=int, default=896)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-busy-core", action="store_true", help="do not start the busy-loop process")
    args = parser.parse_args()
    sources = {"this": SRC} | ({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})
    busy = None if args.no_busy_core else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        inference, training = [], []
        for policy in (None, "PASSIVE"):
            for label, src in sources.items():
                r = _child("inference", dict(size=args.size, repeats=args.repeats, models=args.models), src, policy,
                           args.threads)  # fmt: skip
                inference.append({"code": label, "omp_wait_policy": policy or "default", "seconds": r})
                print(f"inference {label:8s} OMP {policy or 'default':8s} " + ", ".join(
                    f"{m} {r['vit_small_patch16_224'] / r[m]:.2f}x ViT-S" for m in args.models), flush=True)
        for size in args.train_sizes:
            batch = 64 if size <= 96 else 16
            for bf16 in (False, True):
                for label, src in sources.items():
                    r = _child("train", dict(size=size, batch=batch, bf16=bf16, repeats=args.repeats,
                                             models=args.models), src, "PASSIVE", args.threads)  # fmt: skip
                    training.append({"code": label, "size": size, "batch": batch, "bf16": bf16,
                                     "img_per_cpu_s": r})  # fmt: skip
                    print(f"train {label:8s} {size} px {'bf16' if bf16 else 'fp32'} " + ", ".join(
                        f"{m} {r[m] / r['resnet18']:.2f}x ResNet-18" for m in args.models), flush=True)
        profiles = {label: _child("profile", dict(size=args.size, model=args.models[0]), src, None, args.threads)
                    for label, src in sources.items()}  # fmt: skip
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    write(args, inference, training, profiles)


def write(args, inference: list[dict], training: list[dict], profiles: dict) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import environment_lines, markdown_table

    busy = "no busy core" if args.no_busy_core else "one core held by a busy-loop process"
    models = args.models
    lines = ["# ssmamba speed vs ViT-S/16 (inference) and ResNet-18 (training)", "",
             f"Command: `python benchmarks/speed.py{' --baseline-src ...' if args.baseline_src else ''}"
             f"{'' if models == MODELS else ' --models ' + ' '.join(models)}`; "
             f"{args.threads} OpenMP threads, {busy}, median of {args.repeats} alternating runs per case.", "",
             *environment_lines(), "",
             f"## Inference at {args.size} px, batch 1, fp32 (`import torch, timm, ssmamba`)", "",
             "Seconds per image, and each model's speed as a multiple of ViT-S/16's (>= 2x is issue 16's goal).", "",
             markdown_table(["ssmamba code", "OMP_WAIT_POLICY", "ViT-S/16 s", *(f"{m} s" for m in models),
                             *(f"{m} / ViT-S" for m in models)],
                            [(r["code"], r["omp_wait_policy"], f"{r['seconds']['vit_small_patch16_224']:.2f}",
                              *(f"{r['seconds'][m]:.2f}" for m in models),
                              *(f"{r['seconds']['vit_small_patch16_224'] / r['seconds'][m]:.2f}x" for m in models))
                             for r in inference]), "",
             "## Training step (forward + backward + AdamW), images per CPU-second", "",
             "Each model's rate, and as a multiple of ResNet-18's at the same precision (>= 1.0x is issue 16's goal).",
             "", markdown_table(["ssmamba code", "px", "batch", "precision", "ResNet-18", *models,
                                 *(f"{m} / ResNet-18" for m in models)],
                                [(r["code"], r["size"], r["batch"], "bf16 autocast" if r["bf16"] else "fp32",
                                  f"{r['img_per_cpu_s']['resnet18']:.1f}",
                                  *(f"{r['img_per_cpu_s'][m]:.1f}" for m in models),
                                  *(f"{r['img_per_cpu_s'][m] / r['img_per_cpu_s']['resnet18']:.2f}x" for m in models))
                                 for r in training]),
             ""]  # fmt: skip
    for label, prof in profiles.items():
        share = prof["data_movement_share"]
        lines += [f"## Profile of one {models[0]} forward at {args.size} px ({label} code, default wait policy, "
                  f"{busy})",
                  "", f"copy_ + cat + flip: **{100 * sum(share.values()):.1f}%** of self CPU time "
                  f"({', '.join(f'{k[6:]} {100 * v:.1f}%' for k, v in share.items())}); total {prof['total_s']:.2f} s.",
                  "", markdown_table(["op", "calls", "self CPU s", "share"],
                                     [(k, c, f"{s:.3f}", f"{100 * f:.1f}%") for k, c, s, f in prof["top"]]),
                  ""]  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.md").write_text("\n".join(lines))
    (RESULTS / "speed.json").write_text(json.dumps({"inference": inference, "training": training,
                                                    "profiles": profiles}, indent=1))  # fmt: skip
    print(f"wrote {RESULTS / 'speed.md'}")


if __name__ == "__main__":
    main()
