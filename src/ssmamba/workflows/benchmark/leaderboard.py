"""Aggregate benchmark cells into a leaderboard: mean ± std over seeds, bootstrap CIs, a paired comparison with the
best baseline, accuracy under magnification shift and costs; written as Markdown, JSON and one PNG.

Statistics:

* **mean ± std** over the seeds that have finished (sample std, ``ddof=1``);
* **95% CI** of that mean over test images: ``B`` resamples of the test cases (the same draws for every cell,
  so entries are compared on the same resampled test sets), each metric averaged over seeds per resample;
* **paired comparison** of every entry with the best baseline (the timm entry with the highest mean of the
  monitored metric): per-seed differences, a bootstrap CI of the mean difference from the same paired resamples,
  and scipy's Wilcoxon signed-rank and sign (binomial) tests over seeds. With 3 seeds neither test can reach
  p < 0.25, so the bootstrap CI and the seed spread carry the evidence.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from ssmamba.eval.metrics import bootstrap_metrics
from ssmamba.workflows.benchmark.cells import SCALARS, Cell, load_predictions, write_json_atomic
from ssmamba.workflows.benchmark.entries import Entry

__all__ = ["build_leaderboard", "write_leaderboard", "BOOTSTRAP_SEED"]

BOOTSTRAP_SEED = 20260  # one fixed stream: every cell is resampled with the same draws (paired)
_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "macro_f1": "macro-F1",
           "weighted_f1": "weighted F1", "auroc": "AUROC"}


def _mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def _nanmean(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean over seeds, NaN where every seed is NaN (e.g. AUROC of a resample missing a class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN is the answer there
        return np.nanmean(arrays, axis=0)


def _ci(samples: np.ndarray) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    return [float(v) for v in np.percentile(finite, [2.5, 97.5])] if len(finite) else None


def _cell_bootstrap(predictions: dict, n_bootstrap: int) -> dict[str, np.ndarray]:
    return bootstrap_metrics(predictions["labels"], predictions["probs_x1"], n_bootstrap=n_bootstrap,
                             seed=BOOTSTRAP_SEED)


def _entry_row(entry: Entry, cells: list[tuple[int, dict, dict]], factors: tuple[float, ...],
               n_bootstrap: int) -> dict:
    """Aggregate the finished cells ``(seed, result, predictions)`` of one entry."""
    row = {**entry.to_dict(), "seeds": [seed for seed, _, _ in cells], "metrics": {}, "magnification": {}}
    boots = [_cell_bootstrap(p, n_bootstrap) for _, _, p in cells] if n_bootstrap else []
    for metric in SCALARS:
        per_seed = {seed: r["test"]["x1"][metric] for seed, r, _ in cells}
        summary = {**_mean_std(list(per_seed.values())), "per_seed": per_seed}
        if boots:
            summary["ci95"] = _ci(_nanmean([b[metric] for b in boots]))
        row["metrics"][metric] = summary
    for factor in (1.0, *factors):
        key = f"x{factor:g}"
        row["magnification"][key] = {}
        for metric in ("accuracy", "balanced_accuracy"):
            per_seed = {seed: r["test"][key][metric] for seed, r, _ in cells if key in r["test"]}
            row["magnification"][key][metric] = {**_mean_std(list(per_seed.values())), "per_seed": per_seed}
    row["cost"] = {
        "params_m": _mean_std([r["params_m"] for _, r, _ in cells])["mean"],
        "pretrain_cpu_min": _mean_std([r["cpu_s"]["pretrain"] / 60 for _, r, _ in cells])["mean"],
        "finetune_cpu_min": _mean_std([r["cpu_s"]["finetune"] / 60 for _, r, _ in cells])["mean"],
        "inference_img_s": _mean_std([r["inference_img_s"] for _, r, _ in cells])["mean"],
        "threads": cells[0][1].get("threads"),
    }
    row["cost"]["total_cpu_min"] = row["cost"]["pretrain_cpu_min"] + row["cost"]["finetune_cpu_min"]
    row["_boots"] = dict(zip(row["seeds"], boots))
    return row


def _paired(row: dict, base: dict, metric: str) -> dict:
    """``row`` minus ``base`` over their common seeds: per-seed differences of ``metric``, their tests, a paired
    bootstrap CI, and the mean difference of accuracy at every magnification factor."""
    seeds = [s for s in row["seeds"] if s in base["seeds"]]
    diffs = [row["metrics"][metric]["per_seed"][s] - base["metrics"][metric]["per_seed"][s] for s in seeds]
    result = {"vs": base["name"], "metric": metric, "seeds": seeds, "per_seed_diff": diffs,
              "mean_diff": float(np.mean(diffs)) if diffs else None, "wilcoxon_p": None, "sign_p": None,
              "ci95": None}
    nonzero = [d for d in diffs if d != 0]
    if len(nonzero) >= 2:
        result["wilcoxon_p"] = float(stats.wilcoxon(nonzero).pvalue)
    if nonzero:
        result["sign_p"] = float(stats.binomtest(sum(d > 0 for d in nonzero), len(nonzero)).pvalue)
    if seeds and row["_boots"] and base["_boots"]:
        paired = _nanmean([row["_boots"][s][metric] - base["_boots"][s][metric] for s in seeds])
        result["ci95"] = _ci(paired)
    result["accuracy_diff"] = {}
    for key, values in row["magnification"].items():
        ours, theirs = values["accuracy"]["per_seed"], base["magnification"].get(key, {}).get("accuracy", {})
        common = [s for s in seeds if s in ours and s in theirs.get("per_seed", {})]
        result["accuracy_diff"][key] = (float(np.mean([ours[s] - theirs["per_seed"][s] for s in common]))
                                        if common else None)
    return result


# ablation preset -> the part of SSMamba it removes (the full method is the "ssmamba" preset)
ABLATIONS = {"ssmamba-mamim": "MAMIM pretraining", "ssmamba-dms": "DMS (4 directions, 2 scales)",
             "ssmamba-lpr": "LPR", "plain-mamba": "all three"}


def build_leaderboard(out: Path, entries: list[Entry], cfg, recipe: dict, facts: dict) -> dict:
    """The leaderboard of the finished cells in ``out`` for ``entries`` x ``cfg.seeds`` (a JSON-ready dict)."""
    rows = []
    for entry in entries:
        cells = []
        for seed in cfg.seeds:
            cell = Cell(Path(out) / "cells" / entry.name / f"seed_{seed}", entry, seed, cfg.data,
                        cfg.cell_recipe(recipe, entry.name))
            result = cell.result()
            if result is not None and "x1" in result["test"]:
                cells.append((seed, result, load_predictions(cell.root)))
        if cells:
            rows.append({**_entry_row(entry, cells, cfg.magnifications, cfg.bootstrap), "lr": cfg.lr_of(entry.name)})
    metric = cfg.monitor if cfg.monitor in SCALARS else "balanced_accuracy"
    rows.sort(key=lambda r: -(r["metrics"][metric]["mean"] or 0.0))
    baselines = [r for r in rows if r["family"] == "baseline"]
    best = baselines[0] if baselines else None
    for row in rows:
        row["paired"] = _paired(row, best, metric) if best is not None and row is not best else None
    full = next((r for r in rows if r["name"] == "ssmamba"), None)
    parts = [{"part": ABLATIONS[r["name"]], "entry": r["name"], **_paired(full, r, metric)}
             for r in rows if full is not None and r["name"] in ABLATIONS]
    for row in rows:
        row.pop("_boots")
    return {"data": cfg.data, "metric": metric, "magnifications": list(cfg.magnifications), "recipe": recipe,
            "entry_lr": dict(cfg.entry_lr),
            "data_facts": facts, "seeds": list(cfg.seeds), "entries": [e.name for e in entries],
            "n_cells": {"done": sum(len(r["seeds"]) for r in rows), "total": len(entries) * len(cfg.seeds)},
            "best_baseline": best["name"] if best else None, "rows": rows, "parts": parts,
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "load_average": list(os.getloadavg()), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0)
                        if torch.cuda.is_available() else None}}


# ---- writing ------------------------------------------------------------------------------------------------
def _fmt(summary: dict, ci: bool = True) -> str:
    if summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.3f} ± {summary['std']:.3f}"
    if ci and summary.get("ci95"):
        text += f" ({summary['ci95'][0]:.3f}-{summary['ci95'][1]:.3f})"
    return text


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def leaderboard_markdown(board: dict, commands: str = "") -> str:
    metric, rows, recipe, facts = board["metric"], board["rows"], board["recipe"], board["data_facts"]
    factors = [f"x{f:g}" for f in sorted({1.0, *board["magnifications"]})]
    lines = [f"# Leaderboard: `{board['data']}`", "",
             f"{board['n_cells']['done']} of {board['n_cells']['total']} cells ({len(board['entries'])} entries x "
             f"{len(board['seeds'])} seeds) finished. Sorted by mean test {_LABELS[metric]}; mean ± std over seeds, "
             "with the 95% bootstrap CI of the mean over test images in brackets.", "",
             "| rank | entry | " + " | ".join(_LABELS[m] for m in SCALARS[1:]) + " | "
             + " | ".join(f"acc. {f[1:]}x" for f in factors) + " | params (M) | train CPU-min (MAMIM + FT) | "
             "img/s | seeds |",
             "|" + "---|" * (6 + len(SCALARS[1:]) + len(factors))]
    for rank, row in enumerate(rows, 1):
        cost = row["cost"]
        cpu = (f"{cost['pretrain_cpu_min']:.1f} + {cost['finetune_cpu_min']:.1f} = {cost['total_cpu_min']:.1f}"
               if cost["pretrain_cpu_min"] else f"{cost['finetune_cpu_min']:.1f}")
        lines.append(f"| {rank} | **{row['name']}** | "
                     + " | ".join(_fmt(row["metrics"][m]) for m in SCALARS[1:]) + " | "
                     + " | ".join(_fmt(row["magnification"][f]["accuracy"], ci=False) for f in factors)
                     + f" | {cost['params_m']:.2f} | {cpu} | {cost['inference_img_s']:.0f} | {len(row['seeds'])} |")
    best = board["best_baseline"]
    if best:
        lines += ["", f"## Paired comparison with the best baseline, `{best}` ({_LABELS[metric]})", "",
                  "| entry | mean difference | per-seed differences | 95% bootstrap CI | Wilcoxon p | sign test p |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            paired = row["paired"]
            if paired is None or paired["mean_diff"] is None:
                continue
            ci = f"{paired['ci95'][0]:+.3f} to {paired['ci95'][1]:+.3f}" if paired["ci95"] else "n/a"
            lines.append(f"| {row['name']} | {paired['mean_diff']:+.3f} | "
                         + ", ".join(f"{d:+.3f}" for d in paired["per_seed_diff"])
                         + f" | {ci} | {_p(paired['wilcoxon_p'])} | {_p(paired['sign_p'])} |")
        lines += ["", "With 3 seeds, neither test over seeds can go below p = 0.25; read the CI and the spread."]
    if board.get("parts"):
        shifted = [f for f in factors if f != "x1"]
        lines += ["", f"## What each SSMamba part buys (`ssmamba` minus the entry without it, {_LABELS[metric]})", "",
                  "Positive: the full method is better with the part. Same seeds, same test resamples.", "",
                  "| part removed | entry | mean difference | per-seed | 95% bootstrap CI | "
                  + " | ".join(f"acc. diff at {f[1:]}x" for f in shifted) + " |",
                  "|---|---|---|---|---|" + "---|" * len(shifted)]
        for part in board["parts"]:
            if part["mean_diff"] is None:
                continue
            ci = f"{part['ci95'][0]:+.3f} to {part['ci95'][1]:+.3f}" if part["ci95"] else "n/a"
            lines.append(f"| {part['part']} | {part['entry']} | {part['mean_diff']:+.3f} | "
                         + ", ".join(f"{d:+.3f}" for d in part["per_seed_diff"]) + f" | {ci} | "
                         + " | ".join("n/a" if part["accuracy_diff"].get(f) is None
                                      else f"{part['accuracy_diff'][f]:+.3f}" for f in shifted) + " |")
    own_lr = board.get("entry_lr") or {}
    lr_text = (f"AdamW lr {recipe['lr']:g}" if not own_lr else
               f"AdamW lr {recipe['lr']:g}, except " + ", ".join(f"`{k}` {v:g}" for k, v in own_lr.items())
               + " (each entry's own rate, chosen on validation)")
    lines += ["", "## Entries", ""] + [f"- `{r['name']}`: {r['description']}"
                                       + (f"; lr {r['lr']:g}" if own_lr and "lr" in r else "") for r in rows]
    lines += ["", "## Budget and recipe (the same for every entry" + (", but for the learning rates" if own_lr
                                                                      else "") + ")", "",
              f"- Budget: **{recipe['epochs']} fine-tuning epochs** for every entry (equal epochs, not equal time; "
              "the CPU-minutes each entry took are in the table). Entries with a MAMIM stage first pretrain "
              f"{recipe['pretrain_epochs']} epochs on the training images (labels unused); that time is counted "
              "separately and in the total.",
              f"- Recipe: one recipe for all{'' if own_lr else ', not tuned per entry'}: {lr_text}, weight decay "
              f"{recipe['weight_decay']:g}, batch {recipe['batch_size']}, warm-up 1 epoch + cosine, label smoothing "
              f"0.1, drop-path {recipe['drop_path']:g}, {recipe['precision']} training, class balancing "
              f"{recipe['balance']}, {recipe['img_size']} px input"
              + (f", {recipe['max_train']} training samples per seed" if recipe.get("max_train") else "") + ".",
              f"- Views: training crops at zoom {recipe['train_zoom'][0]:g}-{recipe['train_zoom'][1]:g} of the native "
              f"{facts['native_side']}-px images (evaluation: the whole image at zoom {facts['eval_zoom']:g}"
              + ("; zoom-out views mirror the image border" if recipe["zoom_min"] < 1 else "")
              + "), flips, 90° rotations, HED stain and colour jitter.",
              f"- Selection: each run keeps the epoch with the best validation {_LABELS.get(metric, metric)}"
              + (f" (on a fixed random {recipe['max_val']} of the validation samples)" if recipe.get("max_val") else "")
              + "; the test split is evaluated once per cell, after training.",
              f"- Data: {facts['n_train']} training, {facts['n_val']} validation, {facts['n_test']} test samples; "
              f"classes {facts['classes']}.",
              "", "## Magnification shift", "",
              "Each model is also tested on the test images at other magnifications. "
              + ("Nucleus points: the crop read around each point is `crop_size / factor` native pixels, then "
                 "resized to the input size, so 0.5x shows twice the field (real surrounding tissue) at half the "
                 "resolution, and 2x the central half, enlarged." if facts["kind"] == "points" else
                 "Images: `CentreMagnification(factor)` (`ssmamba.data.transforms`) takes the central "
                 "`H/factor x W/factor` field (for factor < 1 the image is mirrored outward to that size), resizes "
                 "it back to `H x W` (bilinear, antialiased), then the usual evaluation transform runs."),
              "", "## Machine", "",
              f"{board['machine']['cpus']} CPUs ({board['machine']['processor']}), "
              f"{board['rows'][0]['cost']['threads'] if rows else '?'} torch threads per process, load average at "
              f"the end {', '.join(f'{x:.2f}' for x in board['machine']['load_average'])}, torch "
              f"{board['machine']['torch']}" + (f", GPU {board['machine']['cuda']}" if board["machine"]["cuda"] else "")
              + ". Inference img/s: batch 32 of random input at the input size, eval mode, best of 3."]
    if commands:
        lines += ["", "## Commands", "", "```", commands.strip(), "```"]
    return "\n".join(lines) + "\n"


def plot_leaderboard(board: dict, path: Path) -> Path:
    """Left: the monitored metric per entry (mean ± std, one dot per seed). Right: accuracy against magnification."""
    from matplotlib.figure import Figure

    rows, metric = board["rows"], board["metric"]
    fig = Figure(figsize=(11, 0.45 * max(4, len(rows)) + 1.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    names = [r["name"] for r in rows][::-1]
    for y, row in enumerate(rows[::-1]):
        summary = row["metrics"][metric]
        colour = "tab:blue" if row["family"] == "ssmamba" else "tab:gray"
        left.barh(y, summary["mean"], xerr=summary["std"], color=colour, alpha=0.6, capsize=3)
        left.scatter(list(summary["per_seed"].values()), [y] * len(summary["per_seed"]), color="black", s=10,
                     zorder=3)
    left.set_yticks(range(len(names)), names)
    values = [v for r in rows for v in r["metrics"][metric]["per_seed"].values()]
    if values:
        left.set_xlim(max(0.0, min(values) - 0.1), min(1.0, max(values) + 0.05))
    left.set_xlabel(f"test {_LABELS[metric]} (bars: mean ± std; dots: seeds)")
    factors = [1.0, *board["magnifications"]]
    order = np.argsort(factors)
    for row in rows:
        means = [row["magnification"][f"x{factors[i]:g}"]["accuracy"]["mean"] for i in order]
        right.plot([factors[i] for i in order], means, marker="o", label=row["name"],
                   linestyle="-" if row["family"] == "ssmamba" else "--")
    right.set_xscale("log", base=2)
    right.set_xticks([factors[i] for i in order], [f"{factors[i]:g}x" for i in order])
    right.set_xlabel("test magnification (trained at 1x)")
    right.set_ylabel("test accuracy (mean over seeds)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.suptitle(f"{Path(board['data']).parent.name or board['data']}: {board['n_cells']['done']}/"
                 f"{board['n_cells']['total']} cells", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_leaderboard(board: dict, out: Path, stem: str = "leaderboard") -> dict[str, Path]:
    """``<stem>.md``, ``.json`` and ``.png`` in ``out``; returns their paths."""
    out = Path(out)
    commands = (out / "commands.txt").read_text() if (out / "commands.txt").is_file() else ""
    paths = {"md": out / f"{stem}.md", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    write_json_atomic(paths["json"], board)
    tmp = paths["md"].with_suffix(".md.tmp")
    tmp.write_text(leaderboard_markdown(board, commands))
    os.replace(tmp, paths["md"])
    plot_leaderboard(board, paths["png"])
    return paths
