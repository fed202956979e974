"""Validation-only sweeps of the model and recipe (issue 12): which settings to keep, chosen without the test split.

Each trial is a named set of `ssmamba finetune` options (and, for trials with a MAMIM stage, `ssmamba pretrain`
options) on top of the budget of ``benchmarks/leaderboards.py`` for that data set. Every (trial, seed) runs in its own
folder under ``--out`` and is never recomputed; a pretraining run is shared by every trial with the same pretraining
options and seed. Only the validation metric that picks the checkpoint is read; the test split is loaded only by
``--test TRIAL``, once, for the trial chosen on validation (the benchmark's own evaluation, at 1x, 0.5x and 2x).
The table goes to ``benchmarks/results/sweep_<dataset>.{md,json}``; the trials, in order, are the record of what was
tried (docs/results.md summarises them).

    python benchmarks/sweep.py crchp --trials base,ls-1e-2 --seeds 0        # two trials, one seed
    python benchmarks/sweep.py crchp --report-only                          # table of the finished runs
    python benchmarks/sweep.py crchp --test lr-3e-3 --seeds 0,1,2           # the chosen trial's test split, once
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leaderboards import DATA, ROOT  # noqa: E402  (the same data paths as the leaderboards)

from ssmamba.train.engine import STATE_NAME, SUMMARY_NAME  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# fp32: on a CPU without AVX512-BF16 (this machine: AVX2) bf16 autocast trains ~7x slower than fp32. Every trial of a
# sweep uses the same precision, so trials compare among themselves (the leaderboards ran bf16 on an AVX512-BF16 CPU).
COMMON = ["--img-size", "64", "--batch-size", "64", "--precision", "fp32", "--threads", "1", "--no-progress"]
# The leaderboards' fine-tuning and MAMIM budgets, per data set (benchmarks/leaderboards.py).
FINETUNE = {
    "crchp": ["--data", str(DATA / "crchp" / "nuclei.csv"), "--crop-size", "64", "--max-train", "1000",
              "--max-val", "800", "--epochs", "8", "--monitor", "weighted_f1", "--patience", "0",
              "--zoom-min", "1.0", "--zoom-max", "1.25"],
    "idc": ["--data", str(DATA / "idc" / "labels.csv"), "--max-train", "1000", "--max-val", "800", "--epochs", "8",
            "--balance", "loss", "--patience", "0", "--zoom-min", "1.0", "--zoom-max", "1.25"],
    "pcam1000": ["--data", str(DATA / "pcam1000" / "labels.csv"), "--epochs", "10", "--patience", "0",
                 "--zoom-min", "1.0", "--zoom-max", "1.25"],
}
PRETRAIN = {
    "crchp": ["--data", str(DATA / "crchp" / "nuclei.csv"), "--split", "train", "--crop-size", "64",
              "--max-images", "6000", "--epochs", "1"],
    "idc": ["--data", str(DATA / "idc" / "labels.csv"), "--split", "train", "--epochs", "1"],
    "pcam1000": ["--data", str(DATA / "pcam1000" / "labels.csv"), "--split", "train", "--epochs", "10"],
}

# name -> (pretraining options or None for random init, fine-tuning options). Later options win over the budget's.
TRIALS: dict[str, tuple[list[str] | None, list[str]]] = {
    "base": (None, []),
    "base+mamim": ([], []),
    # residual branches start at 1e-5 of their size: with ~125 optimizer steps they may never grow (ConvNeXt-style)
    "ls-1e-2": (None, ["--model-args", "layer_scale_init=0.01"]),
    "ls-1": (None, ["--model-args", "layer_scale_init=1.0"]),
    "lr-3e-3": (None, ["--lr", "0.003"]),
    "dp-0": (None, ["--drop-path", "0"]),
    "ls-1e-2+mamim": (["--model-args", "layer_scale_init=0.01"], []),
    "mamim-4ep": (["--epochs", "4"], []),
    # the budget's one learning rate for every entry (1e-3) left ssmamba's validation score still rising at the last
    # epoch; does a larger one help it, and does it help ResNet-18 the same (a shared recipe must stay fair)?
    "lr-5e-3": (None, ["--lr", "0.005"]),
    "lr-3e-3+ls-1e-2": (None, ["--lr", "0.003", "--model-args", "layer_scale_init=0.01"]),
    "lr-3e-3+mamim": ([], ["--lr", "0.003"]),
    "resnet18": (None, ["--model", "resnet18"]),
    "resnet18-lr-3e-3": (None, ["--model", "resnet18", "--lr", "0.003"]),
    "mamim-4ep+ls-1e-2": (["--epochs", "4", "--model-args", "layer_scale_init=0.01"], []),
    # the architecture ablations at the learning rate chosen above (random init: MAMIM did not help at this budget),
    # the same switches as the leaderboard's ssmamba-dms / ssmamba-lpr presets, and the cheaper scalar-decay state
    "lr-3e-3-dms": (None, ["--lr", "0.003", "--model-args", "directions=[row]", "--model-args", "scales=[1]",
                           "--model-args", "conv_kernels=[3]"]),
    "lr-3e-3-lpr": (None, ["--lr", "0.003", "--model-args", "lpr=false"]),
    "lr-3e-3+scalar-decay": (None, ["--lr", "0.003", "--model-args", "scalar_decay=true"]),
    # longer MAMIM where the pretext loss still falls, fine-tuned at the chosen learning rate
    "mamim-4ep+lr-3e-3": (["--epochs", "4"], ["--lr", "0.003"]),
    # ResNet-18 leads by a dense 3x3 prior: the conv stages as two dense 3x3 convs per block (MambaVision's) instead
    # of the depthwise inverted bottleneck (ConvNeXt's, which convnext_atto shows learns slowly at this budget)
    "lr-3e-3+dense": (None, ["--lr", "0.003", "--model-args", "conv_block=dense"]),
    "dense": (None, ["--model-args", "conv_block=dense"]),
    # drop-path 0.1 regularises ~100-step budgets that are far from overfitting
    "lr-3e-3+dense+dp-0": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--drop-path", "0"]),
    # layer scale 1e-5: Adam moves a scale by about lr per step, so after the budget's ~100-125 steps each hybrid
    # branch is at most ~0.3x its size (the earlier ls-1e-2 trial ran at lr 1e-3); 1.0 is timm's "no layer scale"
    "lr-3e-3+dense+ls-1": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                  "layer_scale_init=1.0"]),
    "lr-1e-3+dense+ls-1": (None, ["--model-args", "conv_block=dense", "--model-args", "layer_scale_init=1.0"]),
    # MAMIM (the budget's pretraining) for the dense-conv model, fine-tuned at the chosen rate
    "lr-3e-3+dense+mamim": (["--model-args", "conv_block=dense"], ["--lr", "0.003"]),
    # where the state-space stages start: at 64 px stage 3 is a 4 x 4 grid; how much does scanning it buy?
    "lr-3e-3+dense+conv3": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                   "conv_stages=3"]),
    # MAMIM variants for the dense model (issue 12 item 1), each against lr-3e-3+dense+mamim (the budget's MAMIM):
    # smaller mask patches read by the stride-8 decoder level, so a masked region is one nucleus, not a quarter view
    "mamim-p8+dense": (["--model-args", "conv_block=dense", "--mask-patch-size", "8", "--decoder-levels", "3"],
                       ["--lr", "0.003"]),
    # the mask ratio, both ways from the default 0.6
    "mamim-r0.4+dense": (["--model-args", "conv_block=dense", "--mask-ratio", "0.4"], ["--lr", "0.003"]),
    "mamim-r0.75+dense": (["--model-args", "conv_block=dense", "--mask-ratio", "0.75"], ["--lr", "0.003"]),
    # larger views with more context around the masked regions: 96 px pretraining views at zoom 0.5-1.0
    "mamim-96px+dense": (["--model-args", "conv_block=dense", "--img-size", "96", "--zoom-min", "0.5"],
                         ["--lr", "0.003"]),
    # longer pretraining where the pretext loss still falls (for pcam1000: 3x its budget's 10 epochs, ~300 steps)
    "mamim-30ep+dense": (["--model-args", "conv_block=dense", "--epochs", "30"], ["--lr", "0.003"]),
    # layer-wise lr decay after MAMIM, the fine-tuning recipe masked pretraining is known to want (MAE, BEiT)
    "mamim+ld-0.75+dense": (["--model-args", "conv_block=dense"], ["--lr", "0.003", "--layer-decay", "0.75"]),
    # magnification robustness (issue 12 item 2; --val-shift reads validation at 0.5x / 2x): MAMIM at one zoom, the
    # fine-tuning's evaluation zoom on pcam1000 (64 px of its 96 px images), against the default multi-zoom views
    # (0.25-1.0 of native) and a wider range (0.125-2.0: 32-512 native px per view)
    "mamim-1zoom+dense": (["--model-args", "conv_block=dense", "--zoom-min", "0.667", "--zoom-max", "0.667"],
                          ["--lr", "0.003"]),
    "mamim-widezoom+dense": (["--model-args", "conv_block=dense", "--zoom-min", "0.125", "--zoom-max", "2.0"],
                             ["--lr", "0.003"]),
    # the conv block measured on a third data set (idc), named explicitly now that "dense" is the default
    "lr-3e-3+inverted": (None, ["--lr", "0.003", "--model-args", "conv_block=inverted"]),
    # DMS and LPR ablated again on the dense-block model at the chosen rate (the switches of lr-3e-3-dms/-lpr)
    "lr-3e-3+dense-dms": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                 "directions=[row]", "--model-args", "scales=[1]", "--model-args", "conv_kernels=[3]"]),
    "lr-3e-3+dense-lpr": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args", "lpr=false"]),
    # DMS designs priced by benchmarks/speed_configs.py (issue 12 item 3, issue 16): bidirectional rows only (still
    # a global receptive field: raster order forward and backward), no pooled 2x scan, one decay per channel
    "lr-3e-3+dense+2dir": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                  "directions=[row,row_reverse]"]),
    "lr-3e-3+dense+1scale": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args", "scales=[1]"]),
    "lr-3e-3+dense+scalar": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                    "scalar_decay=true"]),
    "lr-3e-3+dense+fastdms": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                     "directions=[row,row_reverse]", "--model-args", "scales=[1]", "--model-args",
                                     "scalar_decay=true"]),
    # the default model (the three cuts above) with half the states, N = 8: the scan is ~16% of its bf16 step
    "lr-3e-3+dense+fastdms+N8": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                        "directions=[row,row_reverse]", "--model-args", "scales=[1]", "--model-args",
                                        "scalar_decay=true", "--model-args", "d_state=8"]),
    # cheaper networks around the default model, priced by benchmarks/speed_configs.py (issue 16: its bf16 training
    # step on one thread is 0.83-0.88x ResNet-18's): two state-space blocks fewer in stage 3 (6 -> 4), or N = 8 with
    # an MLP ratio of 3
    "lr-3e-3+dense+fastdms+depths-2242": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                                 "directions=[row,row_reverse]", "--model-args", "scales=[1]",
                                                 "--model-args", "scalar_decay=true", "--model-args",
                                                 "depths=[2,2,4,2]"]),
    "lr-3e-3+dense+fastdms+N8+mlp3": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                             "directions=[row,row_reverse]", "--model-args", "scales=[1]",
                                             "--model-args", "scalar_decay=true", "--model-args", "d_state=8",
                                             "--model-args", "mlp_ratio=3.0"]),
    # the default model with an MLP ratio of 3 alone (priced at 0.94x / 0.92x ResNet-18's bf16 step when the default
    # was at 0.88x / 0.86x; with N = 8 as well it lost 3.8 points on crchp)
    "lr-3e-3+dense+fastdms+mlp3": (None, ["--lr", "0.003", "--model-args", "conv_block=dense", "--model-args",
                                          "directions=[row,row_reverse]", "--model-args", "scales=[1]",
                                          "--model-args", "scalar_decay=true", "--model-args", "mlp_ratio=3.0"]),
    # the default model trained under bf16 autocast (the rest of the sweep is fp32): how much bf16 training loses, and
    # (run once on the code before and once after) whether the mixer's bf16 activations under autocast cost accuracy
    "lr-3e-3+bf16": (None, ["--lr", "0.003", "--precision", "bf16"]),
}
# Every trial above ran ssmamba_tiny (the full DMS), the default model until 2026-12-07: a trial run since then
# without --model runs the new default, ssmamba_tiny_fast.
# Trials recorded before the variants' conv_block default became "dense" (benchmarks/results/sweep_*.json rows
# without conv_block=dense in their options) ran the inverted-bottleneck conv stages, the default then.


def _key(options: list[str]) -> str:
    return hashlib.sha1(json.dumps(options).encode()).hexdigest()[:10]


def _run(command: list[str], log: Path) -> None:
    print(" ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "a") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if code:
        sys.exit(f"failed ({code}): {' '.join(command)}; see {log}")


def _finished(folder: Path) -> dict | None:
    state = folder / SUMMARY_NAME
    if not (folder / "DONE").is_file() or not state.is_file():
        return None
    return json.loads(state.read_text())


def _stage(kind: str, options: list[str], folder: Path) -> dict:
    """Run `ssmamba <kind>` into ``folder`` unless it finished; resume it if it was interrupted."""
    done = _finished(folder)
    if done is not None:
        return done
    resume = ["--resume"] if (folder / STATE_NAME).is_file() else ["--overwrite"]
    folder.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "ssmamba", kind, *options, "--out", str(folder), *resume], folder.parent / "log.txt")
    (folder / "DONE").write_text("")
    return _finished(folder)


def run_trial(dataset: str, name: str, seed: int, out: Path) -> dict:
    pretrain_options, finetune_options = TRIALS[name]
    seed_args = ["--seed", str(seed)]
    row = {"trial": name, "seed": seed, "pretrain_options": pretrain_options, "finetune_options": finetune_options,
           "pretrain_cpu_s": 0.0}
    checkpoint = []
    if pretrain_options is not None:
        options = [*PRETRAIN[dataset], *COMMON, *pretrain_options, *seed_args]
        folder = out / "pretrain" / f"{_key(options)}_seed{seed}"
        state = _stage("pretrain", options, folder)
        row["pretrain_cpu_s"] = state.get("cpu_seconds", 0.0)
        checkpoint = ["--init", str(folder / "checkpoint")]
    options = [*FINETUNE[dataset], *COMMON, *finetune_options, *checkpoint, *seed_args]
    state = _stage("finetune", options, out / "trials" / name / f"seed_{seed}")
    history = json.loads((out / "trials" / name / f"seed_{seed}" / "history.json").read_text())
    monitor = next(k for k in history[-1] if k.startswith("val_"))
    row.update({"monitor": monitor, "val": state["best_metric"], "best_epoch": state.get("best_epoch"),
                "finetune_cpu_s": state.get("cpu_seconds", 0.0),
                "val_curve": [r[monitor] for r in history if monitor in r]})
    return row


def _evaluate(dataset: str, run: Path, seed: int, split: str) -> dict:
    """``split``'s metrics of a finished run's best checkpoint at 1x, 0.5x and 2x, by the benchmark's own evaluation
    (``Cell.evaluate``), so the numbers compare with the leaderboard's; probabilities kept in ``run/<split>/``."""
    from ssmamba.workflows.benchmark.cells import Cell
    from ssmamba.workflows.benchmark.entries import parse_entry

    options = FINETUNE[dataset]
    crop = int(options[options.index("--crop-size") + 1]) if "--crop-size" in options else 64
    cell = Cell(run / split, parse_entry("ssmamba-mamim"), seed, options[options.index("--data") + 1],
                {"crop_size": crop, "batch_size": 64})
    (run / split).mkdir(exist_ok=True)
    return cell.evaluate(run / "best", [1.0, 0.5, 2.0], "cpu", 0, split=split)


def test_once(dataset: str, name: str, seeds: list[int], out: Path, results: Path, recorded: list[dict]) -> dict:
    """The test split, read once, for a trial chosen on validation: each seed's best checkpoint at native
    magnification and at 0.5x / 2x, by the benchmark's own evaluation (``Cell.evaluate``), so the numbers compare
    with the leaderboard's. A seed whose run folder is gone is trained again first, and its validation score printed
    beside the ``recorded`` one (they agree when the run is deterministic). Written to
    ``results/sweep_<dataset>_test_<trial>.json``."""
    path = results / f"sweep_{dataset}_test_{name}.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    for seed in seeds:
        if str(seed) in done:
            continue
        run = out / "trials" / name / f"seed_{seed}"
        if _finished(run) is None:  # its folder is gone (runs/ is not kept): train it again, the same options
            row = run_trial(dataset, name, seed, out)
            print(f"{name} seed {seed}: retrained, validation {row['val']:.4f} (recorded: "
                  f"{[r['val'] for r in recorded if r['trial'] == name and r['seed'] == seed]})", flush=True)
        done[str(seed)] = _evaluate(dataset, run, seed, "test")
        path.write_text(json.dumps(done, indent=1))
    test_table(dataset, results)
    return done


def _mean_std(values: list[float]) -> str:
    values = np.asarray(values)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def test_table(dataset: str, results: Path) -> str:
    """Every trial whose test split was read (``sweep_<dataset>_test_<trial>.json``), mean ± std over its seeds at
    1x, 0.5x and 2x, in ``sweep_<dataset>_test.md``."""
    metric = "weighted_f1" if "weighted_f1" in FINETUNE[dataset] else "balanced_accuracy"
    lines = [f"# Test split, read once per trial chosen on validation: {dataset}", "",
             f"`python benchmarks/sweep.py {dataset} --test TRIAL --seeds 0,1,2`; {metric} and accuracy, mean ± std "
             "over seeds, at 1x and under magnification shift (the benchmark's evaluation).", "",
             f"| trial | seeds | {metric} | accuracy | accuracy at 0.5x | accuracy at 2x | AUROC |",
             "|---|---|---|---|---|---|---|"]
    prefix = f"sweep_{dataset}_test_"
    for path in sorted(results.glob(f"{prefix}*.json")):
        seeds = list(json.loads(path.read_text()).values())
        lines.append(f"| {path.stem[len(prefix):]} | {len(seeds)} | {_mean_std([s['x1'][metric] for s in seeds])} | "
                     f"{_mean_std([s['x1']['accuracy'] for s in seeds])} | "
                     f"{_mean_std([s['x0.5']['accuracy'] for s in seeds])} | "
                     f"{_mean_std([s['x2']['accuracy'] for s in seeds])} | "
                     f"{_mean_std([s['x1']['auroc'] for s in seeds])} |")
    text = "\n".join(lines) + "\n"
    (results / f"sweep_{dataset}_test.md").write_text(text)
    return text


def validation_shift(dataset: str, names: list[str], seeds: list[int], out: Path, results: Path) -> str:
    """Magnification robustness chosen without the test split: each (trial, seed)'s best checkpoint on the
    *validation* split at 1x, 0.5x and 2x (the benchmark's evaluation with ``split="val"``), trained first if its
    folder is gone. Written to ``results/sweep_<dataset>_valshift.{json,md}``."""
    path = results / f"sweep_{dataset}_valshift.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        for seed in seeds:
            key = f"{name}/{seed}"
            if key in done:
                continue
            run = out / "trials" / name / f"seed_{seed}"
            if _finished(run) is None:
                run_trial(dataset, name, seed, out)
            done[key] = _evaluate(dataset, run, seed, "val")
            path.write_text(json.dumps(done, indent=1))
    lines = [f"# Validation at 1x, 0.5x and 2x magnification: {dataset}", "",
             f"`python benchmarks/sweep.py {dataset} --val-shift --trials ...`: each trial's best checkpoint on the "
             "whole validation split, shown at 1x, 0.5x and 2x by the benchmark's evaluation (no test image read).",
             "", "| trial | seeds | metric | 1x | 0.5x | 2x |", "|---|---|---|---|---|---|"]
    by_trial: dict[str, list[dict]] = {}
    for key, value in done.items():
        by_trial.setdefault(key.rsplit("/", 1)[0], []).append(value)
    for name, group in by_trial.items():
        for metric in ("balanced_accuracy", "weighted_f1"):
            cells = []
            for factor in group[0]:
                cells.append(_mean_std([g[factor][metric] for g in group]))
            lines.append(f"| {name} | {len(group)} | {metric} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    (results / f"sweep_{dataset}_valshift.md").write_text(text)
    return text


def report(dataset: str, rows: list[dict], results: Path) -> str:
    by_trial: dict[str, list[dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], []).append(row)
    monitor = rows[0]["monitor"] if rows else "val"
    lines = [f"# Validation sweep: {dataset}", "",
             f"`python benchmarks/sweep.py {dataset}`: the leaderboard budget of `benchmarks/leaderboards.py`, "
             f"validation only (no test image read). {monitor}: best epoch's value on the validation subset.", "",
             f"| trial | pretraining | fine-tuning | seeds | {monitor} (mean ± std) | per seed | CPU-min |",
             "|---|---|---|---|---|---|---|"]
    for name, group in by_trial.items():
        values = np.array([r["val"] for r in group])
        first = group[0]  # the options as run (TRIALS may have changed since)
        pre, fine = first.get("pretrain_options", TRIALS[name][0]), first.get("finetune_options", TRIALS[name][1])
        cpu = np.mean([r["pretrain_cpu_s"] + r["finetune_cpu_s"] for r in group]) / 60
        lines.append(f"| {name} | {'random init' if pre is None else ' '.join(pre) or 'MAMIM, budget default'} | "
                     f"{' '.join(fine) or 'budget default'} | {len(group)} | {values.mean():.3f} ± "
                     f"{values.std(ddof=1) if len(values) > 1 else 0:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in values)} | {cpu:.1f} |")
    text = "\n".join(lines) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"sweep_{dataset}.md").write_text(text)
    (results / f"sweep_{dataset}.json").write_text(json.dumps(rows, indent=1))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(FINETUNE))
    parser.add_argument("--trials", default=",".join(TRIALS), help="comma-separated names of TRIALS")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sweeps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--val-shift", action="store_true", help="validation metrics at 1x, 0.5x and 2x "
                        "magnification for --trials and --seeds (trains runs whose folders are gone)")
    parser.add_argument("--test", metavar="TRIAL", help="read the test split once for this trial's --seeds "
                        "(the trial chosen on validation); a seed whose run folder is gone is trained again first")
    args = parser.parse_args()
    out = args.out / args.dataset
    names = [t for t in args.trials.split(",") if t]
    unknown = [t for t in names if t not in TRIALS]
    if unknown:
        sys.exit(f"Error: --trials: unknown {unknown}; known: {', '.join(TRIALS)}")
    rows_path = args.results / f"sweep_{args.dataset}.json"

    def recorded() -> list[dict]:  # re-read each time: several sweeps may share the results file
        return json.loads(rows_path.read_text()) if rows_path.is_file() else []

    if args.val_shift:
        print(validation_shift(args.dataset, names, [int(s) for s in args.seeds.split(",")], out, args.results))
        return
    if args.test:
        seeds = [int(s) for s in args.seeds.split(",")]
        print(json.dumps(test_once(args.dataset, args.test, seeds, out, args.results, recorded()), indent=1))
        return

    for name in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            if args.report_only or any(r["trial"] == name and r["seed"] == seed for r in recorded()):
                continue
            row = run_trial(args.dataset, name, seed, out)
            print(report(args.dataset, [*recorded(), row], args.results), flush=True)
    print(report(args.dataset, recorded(), args.results))


if __name__ == "__main__":
    main()
