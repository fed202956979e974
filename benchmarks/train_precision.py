"""Training-step throughput in float32 and under bfloat16 autocast (``--precision bf16``), ssmamba and baselines.

One step = forward, cross-entropy, backward and an AdamW update on a random batch, as ``ssmamba finetune`` does it.
Rates are images per CPU-second of this process (one torch thread by default), median of ``--repeats`` steps after
two warm-up steps; read the bf16/fp32 ratios, which do not depend on how busy the machine is. Writes
``benchmarks/results/precision.md`` and ``.json``.

    python benchmarks/train_precision.py              # about 3 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/results/scan.md

import torch  # noqa: E402

import ssmamba  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["ssmamba_tiny", "resnet18", "resnet50"]


def build(name: str) -> torch.nn.Module:
    if name.startswith("ssmamba"):
        return ssmamba.create_model(name, num_classes=4)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=4)


def images_per_cpu_second(name: str, size: int, batch: int, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = build(name).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))
    times = []
    for i in range(repeats + 2):
        start = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.float().backward()
        optimizer.step()
        if i >= 2:
            times.append(time.process_time() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        batch = 64 if size <= 96 else 16
        for name in MODELS:
            fp32 = images_per_cpu_second(name, size, batch, False, args.repeats)
            bf16 = images_per_cpu_second(name, size, batch, True, args.repeats)
            rows.append({"model": name, "size": size, "batch": batch, "fp32": fp32, "bf16": bf16,
                         "ratio": bf16 / fp32})
            print(f"{name:14s} {size:4d} px  fp32 {fp32:7.1f}  bf16 {bf16:7.1f} img/CPU-s  x{bf16 / fp32:.2f}",
                  flush=True)
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    lines = ["# Training step: float32 vs bfloat16 autocast", "",
             f"`python benchmarks/train_precision.py`: {args.threads} torch thread(s), torch {torch.__version__}, "
             f"AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}, AMX {'yes' if 'amx_bf16' in flags else 'no'}. "
             f"Images per CPU-second of forward + backward + AdamW, median of {args.repeats} steps; the ratio is "
             "what to read.", "",
             "| model | input px | batch | fp32 img/CPU-s | bf16 img/CPU-s | bf16 / fp32 |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['size']} | {r['batch']} | {r['fp32']:.1f} | {r['bf16']:.1f} | {r['ratio']:.2f}x |"
              for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "precision.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {RESULTS / 'precision.md'}")


if __name__ == "__main__":
    main()
