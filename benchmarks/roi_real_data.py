"""Two-stage SSMamba (MAMIM -> fine-tune) against fine-tuning from random init, on real ROI data sets.

Runs the public CLI, stage by stage, and records each stage's exact command, wall time and CPU time (user + sys of
the child process: the budget the issues state in CPU-minutes). Results: ``benchmarks/results/roi_<dataset>.md``
and ``.json``. Needs ``../shared/data`` (real data, not shipped with ssmamba).

    python benchmarks/roi_real_data.py crchp            # nucleus classification, 4 classes
    python benchmarks/roi_real_data.py idc              # IDC vs not, patient-level split
    python benchmarks/roi_real_data.py crchp --pretrain-epochs 1 --finetune-epochs 1 --max-train 2000  # smoke run
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

DATASETS = {
    # data source, crop size (points CSVs), fine-tuning zoom range, validation metric, class balancing, anchor
    "crchp": {"data": DATA / "crchp" / "nuclei.csv", "crop": 64, "zoom": (1.0, 1.25), "monitor": "weighted_f1",
              "balance": "none", "anchor": "weighted F1 0.784 (SC-CNN + NEP, Sirinukunwattana 2016); 0.789 (RCCNet 2018)"},
    "idc": {"data": DATA / "idc" / "labels.csv", "crop": 64, "zoom": (0.8, 1.25), "monitor": "balanced_accuracy",
            "balance": "loss", "anchor": "balanced accuracy 0.842, F1 0.765 (Janowczyk & Madabhushi 2016, full 277k set)"},
}


def start_stage(name: str, args: list[str], log: Path) -> dict:
    """Start ``ssmamba ARGS`` in the background; :func:`finish_stage` waits for it."""
    command = ["ssmamba", *args]
    print(f"[{name}] {' '.join(command)}", flush=True)
    handle = open(log, "a")
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    return {"stage": name, "command": " ".join(command), "proc": proc, "handle": handle, "start": time.perf_counter()}


def finish_stage(stage: dict) -> dict:
    """Wait for a started stage; its own CPU time (user + sys) comes from ``os.wait4``'s rusage."""
    _, status, usage = os.wait4(stage["proc"].pid, 0)
    stage["handle"].close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"stage {stage['stage']} failed; see the log")
    result = {"stage": stage["stage"], "command": stage["command"], "wall_s": time.perf_counter() - stage["start"],
              "cpu_s": usage.ru_utime + usage.ru_stime}
    print(f"[{result['stage']}] wall {result['wall_s'] / 60:.1f} min, CPU {result['cpu_s'] / 60:.1f} CPU-min",
          flush=True)
    return result


def run_stage(name: str, args: list[str], log: Path) -> dict:
    return finish_stage(start_stage(name, args, log))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("--model", default="ssmamba_tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None, help="subsample training samples (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real")
    parser.add_argument("--skip-scratch", action="store_true", help="no random-init baseline")
    parser.add_argument("--parallel", action="store_true",
                        help="run the two fine-tuning runs at the same time (CPU time is still per run)")
    parser.add_argument("--reuse-pretrain", action="store_true",
                        help="keep a finished pretraining run in OUT/pretrain; its CPU seconds are read from "
                             "OUT/pretrain/cpu_seconds.txt, written by whoever watched that process")
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    if not spec["data"].exists():
        sys.exit(f"{spec['data']} not found: this benchmark needs ../shared/data beside the checkout")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/results/scan.md: spinning threads on a busy machine
    out = args.out / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stages.log"
    data = str(spec["data"])
    common = ["--data", data, "--model", args.model, "--img-size", str(args.img_size), "--crop-size",
              str(spec["crop"]), "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--no-progress"]
    stages = []
    pre = out / "pretrain"
    if args.reuse_pretrain and (pre / "checkpoint" / "model.safetensors").is_file():
        stages.append({"stage": "MAMIM pretraining", "command": "(reused) " + (pre / "command.txt").read_text().strip(),
                       "wall_s": float("nan"), "cpu_s": float((pre / "cpu_seconds.txt").read_text())})
    else:
        pretrain = ["pretrain", *common, "--split", "train", "--epochs", str(args.pretrain_epochs),
                    "--mask-patch-size", "16", "--out", str(pre)]
        pretrain += ["--max-images", str(args.max_train)] if args.max_train else []
        stages.append(run_stage("MAMIM pretraining", pretrain, log))
        (pre / "command.txt").write_text(stages[-1]["command"] + "\n")
    finetune = ["finetune", *common, "--epochs", str(args.finetune_epochs), "--zoom-min", str(spec["zoom"][0]),
                "--zoom-max", str(spec["zoom"][1]), "--monitor", spec["monitor"], "--balance", spec["balance"],
                "--patience", "0"]
    if args.max_train:
        finetune += ["--max-train", str(args.max_train)]
    runs = {"mamim": ["--checkpoint", str(pre / "checkpoint"), "--out", str(out / "finetune_mamim")]}
    if not args.skip_scratch:
        runs["scratch"] = ["--out", str(out / "finetune_scratch")]
    if args.parallel:
        started = [start_stage(f"fine-tuning ({name})", finetune + extra, log) for name, extra in runs.items()]
        stages += [finish_stage(stage) for stage in started]
    else:
        stages += [run_stage(f"fine-tuning ({name})", finetune + extra, log) for name, extra in runs.items()]
    results = {}
    for name in runs:
        stages.append(run_stage(f"evaluation ({name})", [
            "evaluate", "--checkpoint", str(out / f"finetune_{name}" / "best"), "--data", data, "--split", "test",
            "--out", str(out / f"test_{name}"), "--seed", str(args.seed)], log))
        results[name] = json.loads((out / f"test_{name}" / "metrics.json").read_text())
    write(args, spec, stages, results)


def write(args, spec: dict, stages: list[dict], results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cpu = {s["stage"]: s["cpu_s"] / 60 for s in stages}
    budget_mamim = cpu["MAMIM pretraining"] + cpu["fine-tuning (mamim)"]
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc")
    lines = [f"# {args.dataset}: MAMIM -> fine-tune vs random init -> fine-tune", "",
             f"{date.today()}, `python benchmarks/roi_real_data.py {' '.join(sys.argv[1:])}`, seed {args.seed}, "
             f"{args.model} at {args.img_size} px, 2 CPU threads. Published anchor: {spec['anchor']}.", "",
             f"Training budget of the two-stage run: **{budget_mamim:.1f} CPU-minutes** (pretraining "
             f"{cpu['MAMIM pretraining']:.1f} + fine-tuning {cpu['fine-tuning (mamim)']:.1f}); the random-init run "
             f"gets the same fine-tuning epochs"
             + (f" ({cpu['fine-tuning (scratch)']:.1f} CPU-min)." if "fine-tuning (scratch)" in cpu else "."), "",
             "## Test split (95% bootstrap CIs)", "", "| init | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, metrics in results.items():
        cells = []
        for key in keys:
            value, ci = metrics.get(key), (metrics.get("ci95") or {}).get(key)
            cells.append("n/a" if value is None else f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Stages", "", "| stage | wall min | CPU min | command |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['wall_s'] / 60:.1f} | {s['cpu_s'] / 60:.1f} | `{s['command']}` |" for s in stages]
    if args.parallel:
        lines += ["", "The two fine-tuning runs ran at the same time on the 2 cores (wall times overlap; CPU times "
                  "are each run's own)."]
    (RESULTS / f"roi_{args.dataset}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"roi_{args.dataset}.json").write_text(json.dumps(
        {"stages": stages, "results": {k: {m: v.get(m) for m in keys + ("ci95",)} for k, v in results.items()}},
        indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
