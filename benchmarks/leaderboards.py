"""The committed leaderboards: `ssmamba benchmark` on the real ROI data sets in ../shared/data, 8 entries x 3 seeds.

Each data set runs as one `ssmamba benchmark` over a shared output folder, by ``--jobs`` processes of one torch
thread each (they split the cells between them through the cells' lock files). Rerunning continues where a run
stopped; finished cells are never recomputed. The leaderboard files are copied to
``benchmarks/results/leaderboard_<dataset>.{md,json,png}``, and every finished cell's record (cell.json,
result.json, and the test labels with native-magnification probabilities as a CSV: no weights) to ``benchmarks/results/cells/<dataset>/``, from where the next
run on another machine starts: the matrix can span sittings and machines.

    python benchmarks/leaderboards.py pcam1000 idc crchp --jobs 2     # the matrix (hours on 2 CPU cores)
    python benchmarks/leaderboards.py idc --report-only                # leaderboard of the cells finished so far
    python benchmarks/leaderboards.py pcam1000 --seeds 0 --epochs 1 --out /tmp/lb --results /tmp/lb   # smoke run

Budgets (the same for every entry of a data set; chosen so the whole matrix fits on a 2-core machine, not tuned
on test data): fine-tuning epochs and the number of labelled training samples per seed below; MAMIM entries first
pretrain on the training images, labels unused. Learning rates: per entry where validation chose one (ENTRY_LR).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

# ssmamba_tiny_fast+mamim: the full method with the cheaper DMS (bidirectional rows, one scale, scalar decay)
ENTRIES = "ssmamba,ssmamba-mamim,ssmamba-dms,ssmamba-lpr,ssmamba_tiny_fast+mamim,resnet18,convnext_atto,mambaout_femto"
# The presets are built on ssmamba_tiny (the full DMS), as every committed cell was; the default model
# (ssmamba_tiny_fast, since 2026-12-07) is its own entry
COMMON = ["--backbone", "ssmamba_tiny", "--img-size", "64", "--batch-size", "64", "--precision", "bf16",
          "--zoom-min", "1.0", "--zoom-max", "1.25", "--threads", "1", "--no-progress"]
SSMAMBA = ("ssmamba", "ssmamba-mamim", "ssmamba-dms", "ssmamba-lpr", "ssmamba_tiny_fast+mamim")
# Each entry's peak learning rate where it is not the benchmark's 1e-3, chosen on validation only by
# benchmarks/sweep.py (results/sweep_<dataset>.md; 3 seeds, fp32, the same budgets):
# - ssmamba_tiny: 3e-3 beats 1e-3 on pcam1000 (0.774 vs 0.753) and crchp (0.686 vs 0.629); idc was not swept and
#   takes the rate chosen on the other two;
# - ResNet-18: 3e-3 on pcam1000 (0.811 vs 0.794); 1e-3 on crchp (0.692 vs 0.675); a tie on idc (0.811 both): 1e-3;
# - convnext_atto and mambaout_femto were not swept: 1e-3.
ENTRY_LR = {
    "pcam1000": {**dict.fromkeys(SSMAMBA, 3e-3), "resnet18": 3e-3},
    "idc": dict.fromkeys(SSMAMBA, 3e-3),
    "crchp": dict.fromkeys(SSMAMBA, 3e-3),
}
DATASETS = {
    # all 600 training patches; the 96-px patch is shown whole at 64 px
    "pcam1000": ["--data", str(DATA / "pcam1000" / "labels.csv"), "--epochs", "10", "--pretrain-epochs", "10"],
    # 1,000 labelled training patches per seed (of 6,293); MAMIM on all 6,293 training images, labels unused;
    # checkpoints chosen on 800 of the 1,932 validation patches (validating on all of them every epoch cost more
    # than training); the test split is used whole
    "idc": ["--data", str(DATA / "idc" / "labels.csv"), "--max-train", "1000", "--max-val", "800", "--epochs", "8",
            "--pretrain-epochs", "1", "--balance", "loss"],
    # 1,000 labelled training nuclei per seed (of 15,330); MAMIM on 6,000 training-image crops, labels unused;
    # checkpoints chosen on 800 of the 2,268 validation nuclei; all 4,846 test nuclei
    "crchp": ["--data", str(DATA / "crchp" / "nuclei.csv"), "--crop-size", "64", "--max-train", "1000",
              "--max-val", "800", "--epochs", "8", "--pretrain-epochs", "1", "--pretrain-max-images", "6000",
              "--monitor", "weighted_f1"],
}


def _export_predictions(npz: Path, csv_path: Path) -> None:
    """The test labels and native-magnification probabilities (all the leaderboard's CIs need) as a small CSV."""
    arrays = np.load(npz)
    labels, probs = arrays["labels"], arrays["probs_x1"]
    rows = ["label," + ",".join(f"prob_{k}" for k in range(probs.shape[1]))]
    rows += [f"{y}," + ",".join(f"{p:.4f}" for p in row) for y, row in zip(labels, probs)]
    csv_path.write_text("\n".join(rows) + "\n")


def _import_predictions(csv_path: Path, npz: Path) -> None:
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
    np.savez_compressed(npz, labels=table[:, 0].astype(np.int64), probs_x1=table[:, 1:].astype(np.float32))


def sync_cells(source: Path, target: Path, export: bool) -> None:
    """Copy the record of every finished cell under ``source`` that ``target`` lacks (never overwriting): cell.json,
    the predictions (``export``: npz -> CSV; else CSV -> npz), and result.json last, since it marks a finished cell."""
    for result in sorted(source.glob("*/seed_*/result.json")):
        cell = result.parent.relative_to(source)
        if (target / cell / "result.json").exists():
            continue
        (target / cell).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.parent / "cell.json", target / cell / "cell.json")
        if export and (result.parent / "predictions.npz").is_file():
            _export_predictions(result.parent / "predictions.npz", target / cell / "predictions.csv")
        elif not export and (result.parent / "predictions.csv").is_file():
            _import_predictions(result.parent / "predictions.csv", target / cell / "predictions.npz")
        shutil.copyfile(result, target / cell / "result.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=list(DATASETS))
    parser.add_argument("--entries", default=ENTRIES)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="processes sharing the cells (one thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "leaderboards")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="train nothing; leaderboard of finished cells")
    args, extra = parser.parse_known_args()  # anything else is passed on to `ssmamba benchmark`
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    for name in args.datasets:
        if not Path(DATASETS[name][1]).exists():
            sys.exit(f"{DATASETS[name][1]} not found: this benchmark needs ../shared/data beside the checkout")
        out = args.out / name
        own_lr = [word for entry, lr in ENTRY_LR[name].items() if entry in args.entries.split(",")
                  for word in ("--entry-lr", f"{entry}={lr:g}")]
        command = ["ssmamba", "benchmark", *DATASETS[name], *COMMON, "--entries", args.entries, "--seeds",
                   args.seeds, "--out", str(out), *own_lr, *extra]
        print(" ".join(command), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        committed = args.results / "cells" / name
        sync_cells(committed, out / "cells", export=False)  # continue from the cells committed by earlier runs
        if args.report_only:
            command.append("--report-only")
        logs = [open(out / f"job{j}.log", "a") for j in range(1 if args.report_only else args.jobs)]
        jobs = [subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env) for log in logs]
        codes = [job.wait() for job in jobs]
        for log in logs:
            log.close()
        if any(codes):
            sys.exit(f"{name}: a benchmark process failed (exit codes {codes}); see {out}/job*.log")
        args.results.mkdir(parents=True, exist_ok=True)
        sync_cells(out / "cells", committed, export=True)
        for suffix in ("md", "json", "png"):
            shutil.copyfile(out / f"leaderboard.{suffix}", args.results / f"leaderboard_{name}.{suffix}")
        print(f"{name}: {args.results}/leaderboard_{name}.md", flush=True)


if __name__ == "__main__":
    main()
