"""Two-stage SSMamba (MAMIM -> fine-tune) against fine-tuning from random init, on real ROI data sets.

Runs the public CLI, stage by stage, and records each stage's exact command, wall time and CPU time (user + sys of
the child process: the budget the issues state in CPU-minutes). Results: ``benchmarks/results/roi_<dataset>.md``
and ``.json``. Needs ``../shared/data`` (real data, not shipped with ssmamba).

    python benchmarks/roi_real_data.py crchp --parallel     # nucleus classification, 4 classes (~60 min here)
    python benchmarks/roi_real_data.py idc --parallel       # IDC vs not, patient-level split
    python benchmarks/roi_real_data.py idc --max-train 64 --pretrain-epochs 1 --finetune-epochs 1 \
        --out /tmp/smoke --results /tmp/smoke                # smoke run of the driver
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
    # data source, crop size (points CSVs), zoom range of the training views (absolute for pretraining, relative to
    # the evaluation view for fine-tuning; with these small patches both give the zooms of the earlier runs: crchp
    # 1-1.25x native, idc 1.28x = 64/50, no lower-magnification views), validation metric, class balancing, default
    # (pretraining, fine-tuning) epochs, anchor. crchp: the MAMIM loss flattens after ~400 steps (2 epochs), so the
    # rest of the 60 CPU-minute budget goes to fine-tuning.
    "crchp": {"data": DATA / "crchp" / "nuclei.csv", "crop": 64, "zoom": (1.0, 1.25), "monitor": "weighted_f1",
              "balance": "none", "epochs": (2, 11),
              "anchor": "weighted F1 0.784 (SC-CNN + NEP, Sirinukunwattana 2016); 0.789 (RCCNet 2018)"},
    "idc": {"data": DATA / "idc" / "labels.csv", "crop": 64, "zoom": (1.0, 1.0), "monitor": "balanced_accuracy",
            "balance": "loss", "epochs": (4, 9),
            "anchor": "balanced accuracy 0.842, F1 0.765 (Janowczyk & Madabhushi 2016, full 277k set)"},
}


def start_stage(name: str, args: list[str], log: Path, run_dir: Path | None = None) -> dict:
    """Start ``ssmamba ARGS`` in the background; :func:`finish_stage` waits for it."""
    command = ["ssmamba", *args]
    print(f"[{name}] {' '.join(command)}", flush=True)
    handle = open(log, "a")
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    return {"stage": name, "command": " ".join(command), "proc": proc, "handle": handle, "start": time.perf_counter(),
            "run_dir": run_dir}


def finish_stage(stage: dict) -> dict:
    """Wait for a started stage; its own CPU time (user + sys) comes from ``os.wait4``'s rusage. A training stage
    leaves ``command.txt`` and ``cpu_seconds.txt`` in its run folder, so ``--reuse`` can pick it up later."""
    _, status, usage = os.wait4(stage["proc"].pid, 0)
    stage["handle"].close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"stage {stage['stage']} failed; see the log")
    result = {"stage": stage["stage"], "command": stage["command"], "wall_s": time.perf_counter() - stage["start"],
              "cpu_s": usage.ru_utime + usage.ru_stime}
    if stage["run_dir"] is not None:
        (stage["run_dir"] / "command.txt").write_text(result["command"] + "\n")
        (stage["run_dir"] / "cpu_seconds.txt").write_text(f"{result['cpu_s']:.1f}\n")
    print(f"[{result['stage']}] wall {result['wall_s'] / 60:.1f} min, CPU {result['cpu_s'] / 60:.1f} CPU-min",
          flush=True)
    return result


def reused_stage(name: str, run_dir: Path) -> dict | None:
    """A finished training stage in ``run_dir`` (``command.txt`` + ``cpu_seconds.txt`` from whoever ran and timed
    it), or None."""
    if not ((run_dir / "command.txt").is_file() and (run_dir / "cpu_seconds.txt").is_file()):
        return None
    print(f"[{name}] reusing {run_dir}", flush=True)
    return {"stage": name, "command": "(reused) " + (run_dir / "command.txt").read_text().strip(),
            "wall_s": float("nan"), "cpu_s": float((run_dir / "cpu_seconds.txt").read_text())}


def run_stage(name: str, args: list[str], log: Path) -> dict:
    return finish_stage(start_stage(name, args, log))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("--model", default="ssmamba_tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default: the data set's (crchp 2, idc 4)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: the data set's (crchp 11, idc 9)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--max-train", type=int, default=None, help="subsample training samples (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where roi_<dataset>.md/.json go")
    parser.add_argument("--skip-scratch", action="store_true", help="no random-init baseline")
    parser.add_argument("--parallel", action="store_true",
                        help="one torch thread per run, two runs at a time: pretraining beside the random-init "
                             "fine-tuning, then the MAMIM fine-tuning (CPU time is still per run)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished training runs in OUT (their command.txt and cpu_seconds.txt say how "
                             "they were run and what they cost)")
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    if args.pretrain_epochs is None:
        args.pretrain_epochs = spec["epochs"][0]
    if args.finetune_epochs is None:
        args.finetune_epochs = spec["epochs"][1]
    if not spec["data"].exists():
        sys.exit(f"{spec['data']} not found: this benchmark needs ../shared/data beside the checkout")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # benchmarks/results/scan.md: spinning threads, busy machine
    if args.parallel:
        os.environ["OMP_NUM_THREADS"] = "1"
    out = args.out / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stages.log"
    data = str(spec["data"])
    common = ["--data", data, "--model", args.model, "--img-size", str(args.img_size), "--crop-size",
              str(spec["crop"]), "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--no-progress",
              "--precision", args.precision]
    zoom = ["--zoom-min", str(spec["zoom"][0]), "--zoom-max", str(spec["zoom"][1])]
    pre = out / "pretrain"
    pretrain = ["pretrain", *common, *zoom, "--split", "train", "--epochs", str(args.pretrain_epochs),
                "--mask-patch-size", "16", "--out", str(pre)]
    pretrain += ["--max-images", str(args.max_train)] if args.max_train else []
    finetune = ["finetune", *common, *zoom, "--epochs", str(args.finetune_epochs), "--monitor", spec["monitor"],
                "--balance", spec["balance"], "--patience", "0"]
    finetune += ["--max-train", str(args.max_train)] if args.max_train else []
    runs = {"mamim": ["--init", str(pre / "checkpoint")]}
    if not args.skip_scratch:
        runs["scratch"] = []
    # (name, ssmamba arguments, run folder), in an order where each stage's inputs exist when it starts
    plan = [("MAMIM pretraining", pretrain, pre)]
    plan += [(f"fine-tuning ({name})", [*finetune, *extra, "--out", str(out / f"finetune_{name}")],
              out / f"finetune_{name}") for name, extra in runs.items()]
    if args.parallel and not args.skip_scratch:  # pretraining and the random-init run need nothing from each other
        plan = [plan[0], plan[2], plan[1]]
    stages, running = {}, []
    for name, stage_args, run_dir in plan:
        if args.reuse and (reused := reused_stage(name, run_dir)):
            stages[name] = reused
            continue
        if name == "fine-tuning (mamim)":  # needs the pretraining to have finished
            for stage in [s for s in running if s["stage"] == "MAMIM pretraining"]:
                stages[stage["stage"]] = finish_stage(stage)
                running.remove(stage)
        if len(running) == (2 if args.parallel else 1):
            stage = running.pop(0)
            stages[stage["stage"]] = finish_stage(stage)
        running.append(start_stage(name, stage_args, log, run_dir))
    for stage in running:
        stages[stage["stage"]] = finish_stage(stage)
    results = {}
    for name in runs:
        for tta in (False, True):
            label = name + (" + 8-view TTA" if tta else "")
            test_dir = out / f"test_{name}{'_tta' if tta else ''}"
            command = ["evaluate", "--checkpoint", str(out / f"finetune_{name}" / "best"), "--data", data,
                       "--split", "test", "--out", str(test_dir), "--seed", str(args.seed)] + (["--tta"] if tta else [])
            if args.reuse and (test_dir / "metrics.json").is_file():
                stages[f"evaluation ({label})"] = {"stage": f"evaluation ({label})", "wall_s": float("nan"),
                                                   "cpu_s": float("nan"), "command": "(reused) ssmamba " +
                                                   " ".join(command)}
            else:
                stages[f"evaluation ({label})"] = run_stage(f"evaluation ({label})", command, log)
            results[label] = json.loads((test_dir / "metrics.json").read_text())
    write(args, spec, list(stages.values()), results)


def write(args, spec: dict, stages: list[dict], results: dict) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    cpu = {s["stage"]: s["cpu_s"] / 60 for s in stages}
    budget_mamim = cpu["MAMIM pretraining"] + cpu["fine-tuning (mamim)"]
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc")
    lines = [f"# {args.dataset}: MAMIM -> fine-tune vs random init -> fine-tune", "",
             f"{date.today()}, `python benchmarks/roi_real_data.py {' '.join(sys.argv[1:])}`, seed {args.seed}, "
             f"{args.model} at {args.img_size} px, {args.precision}, "
             f"{os.environ.get('OMP_NUM_THREADS', os.cpu_count())} torch thread(s) per run. "
             f"Published anchor: {spec['anchor']}.", "",
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
        lines += ["", "Two runs at a time on the 2 cores, one torch thread each (wall times overlap; CPU times are "
                  "each run's own). Training CPU time includes the per-epoch validation."]
    (args.results / f"roi_{args.dataset}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"roi_{args.dataset}.json").write_text(json.dumps(
        {"stages": stages, "results": {k: {m: v.get(m) for m in keys + ("ci95",)} for k, v in results.items()}},
        indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
