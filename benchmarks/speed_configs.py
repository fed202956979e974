"""Training speed of ssmamba_tiny's DMS configurations against ResNet-18: what each part of the mixer costs.

    python benchmarks/speed_configs.py                       # every configuration in CONFIGS, 64 and 224 px
    python benchmarks/speed_configs.py --sizes 64 --repeats 2 --configs default,no-pooled-scan

The issue-16 goal is a training step at least as fast as ResNet-18's at the same precision. The scan kernel runs
near its arithmetic bound (``benchmarks/results/scan.md``), so what remains are design choices: how many
directions and scales DMS scans, the state size, and one decay per channel (``scalar_decay``). This script prices
each of them the way ``benchmarks/speed.py`` prices the default: a training step (forward, cross-entropy, backward,
AdamW; channels-last) as images per CPU-second of the process, every model of a case timed in turn in one fresh
process (ResNet-18, then each configuration, repeated), so a ratio never mixes two machine states. Accuracy of the
same configurations: the validation sweeps (``benchmarks/sweep.py``, trials named after these configurations).
Writes ``benchmarks/results/speed_configs.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"

# name -> ssmamba_tiny architecture arguments (SSMambaConfig fields); "default" is the variant as it ships
CONFIGS: dict[str, dict] = {
    "default": {},
    "scalar-decay": {"scalar_decay": True},
    "no-pooled-scan": {"scales": [1]},
    "2-directions": {"directions": ["row", "row_reverse"]},
    "2-directions+no-pooled-scan": {"directions": ["row", "row_reverse"], "scales": [1]},
    "2-directions+no-pooled-scan+scalar-decay": {"directions": ["row", "row_reverse"], "scales": [1],
                                                 "scalar_decay": True},
    "d_state-8": {"d_state": 8},
    "2-directions+no-pooled-scan+scalar-decay+d_state-8": {"directions": ["row", "row_reverse"], "scales": [1],
                                                           "scalar_decay": True, "d_state": 8},
    "1-direction-1-scale": {"directions": ["row"], "scales": [1], "conv_kernels": [3]},
    # cheaper networks around the default model (ssmamba_tiny_fast = 2-directions+no-pooled-scan+scalar-decay)
    "fast+mlp-3": {"directions": ["row", "row_reverse"], "scales": [1], "scalar_decay": True, "mlp_ratio": 3.0},
    "fast+d_state-8+mlp-3": {"directions": ["row", "row_reverse"], "scales": [1], "scalar_decay": True,
                             "d_state": 8, "mlp_ratio": 3.0},
    "fast+depths-2242": {"directions": ["row", "row_reverse"], "scales": [1], "scalar_decay": True,
                         "depths": [2, 2, 4, 2]},
}


def train_case(size: int, batch: int, bf16: bool, repeats: int, configs: dict[str, dict]) -> dict:
    """Images per CPU-second of ResNet-18 and of ssmamba_tiny under each configuration, alternating."""
    import timm
    import torch

    import ssmamba  # noqa: F401  (after torch and timm, like a user script)
    from speed import _alternate, training_step

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))
    steps = {"resnet18": training_step(timm.create_model("resnet18", num_classes=4), x, y, bf16)}
    steps |= {name: training_step(ssmamba.create_model("ssmamba_tiny", num_classes=4, **args), x, y, bf16)
              for name, args in configs.items()}  # fmt: skip
    seconds = _alternate(steps, repeats, time.process_time)
    return {name: batch / s for name, s in seconds.items()}


def _child(args: dict, threads: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import case_in_child

    return case_in_child("speed_configs", "train_case", args, SRC, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--section", metavar="TITLE", help="add this run to the results file as its own section "
                        "(replaced if it exists) instead of rewriting the file")
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown --configs {unknown}; known: {list(CONFIGS)}")
    configs = {n: CONFIGS[n] for n in names}
    cases, load_before = [], os.getloadavg()
    for size in args.sizes:
        batch = 64 if size <= 96 else 16
        for precision in args.precisions:
            rates = _child(dict(size=size, batch=batch, bf16=precision == "bf16", repeats=args.repeats,
                                configs=configs), args.threads)  # fmt: skip
            cases.append({"size": size, "batch": batch, "precision": precision, "img_per_cpu_s": rates})
            print(f"{size} px {precision}: " + ", ".join(f"{n} {r / rates['resnet18']:.2f}x" for n, r in rates.items()
                                                         if n != "resnet18"), flush=True)
    write(args, configs, cases, load_before, os.getloadavg())


def write(args, configs: dict, cases: list[dict], load_before, load_after) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import environment_lines, markdown_table, replace_section, write_markdown_and_json

    columns = [f"{c['size']} px {c['precision']}" for c in cases]
    rows = [(name, json.dumps(configs[name]) if configs[name] else "(as shipped)",
             *(f"{c['img_per_cpu_s'][name] / c['img_per_cpu_s']['resnet18']:.2f}x" for c in cases))
            for name in configs]
    rows.append(("ResNet-18, img per CPU-s", "", *(f"{c['img_per_cpu_s']['resnet18']:.1f}" for c in cases)))
    command = shlex.join(["python", "benchmarks/speed_configs.py", *sys.argv[1:]])
    lines = ["# Training speed of DMS configurations (ssmamba_tiny) vs ResNet-18", "",
             f"Command: `{command}`; {args.threads} OpenMP thread(s), OMP_WAIT_POLICY=PASSIVE, "
             f"median of {args.repeats} alternating steps per model after one warm-up; batch 64 at 64 px, 16 at "
             "224 px. Load average (1 min) " f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.", "",
             *environment_lines(), "",
             "Training images per CPU-second as a fraction of ResNet-18's in the same process (>= 1.0x: faster).", "",
             markdown_table(["configuration", "architecture arguments", *columns], rows), ""]
    if args.section:  # the body of this run under its own heading; the file's earlier runs stay
        replace_section(RESULTS / "speed_configs.md", args.section, "\n".join(lines[2:]))
        return
    write_markdown_and_json(RESULTS, "speed_configs", lines, {"configs": configs, "cases": cases})


if __name__ == "__main__":
    main()
