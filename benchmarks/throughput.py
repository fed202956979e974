"""Inference throughput and peak memory of SSMamba against the encoders a user would otherwise pick.

Same harness, same threads, fp32, eval mode, ``torch.inference_mode``: each (model, size) runs in a fresh
subprocess (so peak RSS belongs to that case alone), with one warm-up and the median of ``--repeats`` timed calls.
Writes ``benchmarks/results/throughput.md`` and ``throughput.png``.

    python benchmarks/throughput.py            # full table (about 15 minutes on 2 cores)
    python benchmarks/throughput.py --quick    # 224 and 448 px, 2 models, under 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Sleeping (not spinning) OpenMP waits, inherited by every case's process: on a shared machine spinning threads
# made single cases up to 10x slower (see benchmarks/results/scan.md). Same setting for every model.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
MODELS = {  # label -> (factory, name, kwargs)
    "ssmamba_tiny": ("ssmamba", "ssmamba_tiny", {}),
    "ssmamba_small": ("ssmamba", "ssmamba_small", {}),
    "resnet50": ("timm", "resnet50", {}),
    "vit_small_patch16": ("timm", "vit_small_patch16_224", {"dynamic_img_size": True}),
    "convnext_tiny": ("timm", "convnext_tiny", {}),
}
BATCH = {224: 8, 448: 2, 896: 1, 1344: 1}


def run_case(label: str, size: int, repeats: int) -> dict:
    """Runs inside the child process: build, warm up, time, and report peak RSS."""
    import resource
    import statistics

    import torch

    import ssmamba  # noqa: F401  (registers the ssmamba variants with timm)

    factory, name, kwargs = MODELS[label]
    if factory == "ssmamba":
        model = ssmamba.create_model(name, num_classes=1000, **kwargs)
    else:
        import timm

        model = timm.create_model(name, pretrained=False, **kwargs)
    model.eval()
    batch = BATCH[size]
    x = torch.randn(batch, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    with torch.inference_mode():
        model(x)  # warm-up (and the one-time scan-kernel load)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = statistics.median(times)
    return {"model": label, "size": size, "batch": batch, "params_m": params / 1e6, "seconds": seconds,
            "images_per_s": batch / seconds, "peak_rss_mb": peak / 1024,
            "activation_mb": max(0, peak - rss_before) / 1024, "threads": torch.get_num_threads()}


def measure(label: str, size: int, repeats: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import throughput; "
            f"print(json.dumps(throughput.run_case({label!r}, {size}, {repeats})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"model": label, "size": size, "error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(rows: list[dict], sizes: list[int], command: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    by = {(r["model"], r["size"]): r for r in rows if "error" not in r}
    labels = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["# Inference throughput (CPU, fp32)", "",
             f"`{command}` on {date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
             f"Batch per size: {', '.join(f'{s} px: {BATCH[s]}' for s in sizes)}. Median of the timed calls, "
             "each case in a fresh process; peak RSS is the whole process (weights included).", "",
             "## Images per second", "", "| model | params (M) | " + " | ".join(f"{s} px" for s in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    for label in labels:
        cells = [f"{by[(label, s)]['images_per_s']:.2f}" if (label, s) in by else "failed" for s in sizes]
        params = next((r["params_m"] for r in rows if r["model"] == label and "params_m" in r), float("nan"))
        lines.append(f"| {label} | {params:.1f} | " + " | ".join(cells) + " |")
    lines += ["", f"## Cost growth relative to {sizes[0]} px (seconds per image; (size/{sizes[0]})^2 is linear "
              "in pixels)", "", "| model | " + " | ".join(f"{s} px" for s in sizes[1:]) + " |",
              "|---|" + "---|" * (len(sizes) - 1)]
    for label in labels:
        if (label, sizes[0]) not in by:
            continue
        base = 1 / by[(label, sizes[0])]["images_per_s"]
        cells = [f"{(1 / by[(label, s)]['images_per_s']) / base:.1f}x" if (label, s) in by else "-"
                 for s in sizes[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["| (linear in pixels) | " + " | ".join(f"{(s / sizes[0]) ** 2:.0f}x" for s in sizes[1:]) + " |"]
    if "ssmamba_tiny" in labels and "vit_small_patch16" in labels:
        lines += ["", "## ssmamba_tiny vs ViT-S/16 (throughput ratio)", "",
                  "| " + " | ".join(f"{s} px" for s in sizes) + " |", "|" + "---|" * len(sizes)]
        lines.append("| " + " | ".join(
            f"{by[('ssmamba_tiny', s)]['images_per_s'] / by[('vit_small_patch16', s)]['images_per_s']:.2f}x"
            if ("ssmamba_tiny", s) in by and ("vit_small_patch16", s) in by else "-" for s in sizes) + " |")
    lines += ["", "## Peak process memory (MB)", "", "| model | " + " | ".join(f"{s} px" for s in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(
            f"{by[(label, s)]['peak_rss_mb']:.0f}" if (label, s) in by else "-" for s in sizes) + " |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Failed cases: " + "; ".join(f"{r['model']} @ {r['size']}: {r['error']}" for r in errors)]
    lines += ["", "![throughput](throughput.png)", ""]
    out = RESULTS / "throughput.md"
    out.write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in labels:
        points = [(s, by[(label, s)]["images_per_s"]) for s in sizes if (label, s) in by]
        ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("input side (px)")
    ax.set_ylabel("images / s (CPU, fp32)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "throughput.png", dpi=110)
    (RESULTS / "throughput.json").write_text(json.dumps(rows, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="224 and 448 px, ssmamba_tiny and ViT-S only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=None, choices=list(MODELS))
    args = parser.parse_args()
    sizes = [224, 448] if args.quick else [224, 448, 896, 1344]
    labels = args.models or (["ssmamba_tiny", "vit_small_patch16"] if args.quick else list(MODELS))
    rows = []
    for size in sizes:
        for label in labels:
            row = measure(label, size, args.repeats)
            rows.append(row)
            shown = f"{row['images_per_s']:.2f} img/s, peak {row['peak_rss_mb']:.0f} MB" if "error" not in row \
                else row["error"]
            print(f"{label:>18} @ {size:>4}px: {shown}", flush=True)
    command = "python benchmarks/throughput.py" + (" --quick" if args.quick else "")
    print(write_results(rows, sizes, command).read_text())


if __name__ == "__main__":
    main()
