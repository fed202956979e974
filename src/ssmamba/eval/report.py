"""Evaluation reports: ``metrics.json``, ``report.md``, ``confusion_matrix.png`` and ``roc.png`` in one folder.

Figures are drawn on ``matplotlib.figure.Figure`` objects (rendered by Agg), never through pyplot's global state,
so writing a report neither opens windows nor changes the backend of the caller's session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ssmamba.eval.metrics import SCALAR_METRICS

_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
           "weighted_f1": "Weighted F1", "auroc": "AUROC", "kappa": "Cohen's kappa"}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _interval(interval) -> str:
    return "n/a" if not interval else f"{interval[0]:.4f} – {interval[1]:.4f}"


def metrics_table(metrics: dict) -> list[str]:
    """Markdown lines: what the scalars mean, then a table of each scalar metric with its 95% CI."""
    classes = metrics["classes"]
    kappa = "quadratic-weighted" if metrics.get("kappa_weights") == "quadratic" else "unweighted"
    auroc = "of the positive class" if len(classes) == 2 else "macro one-vs-rest"
    lines = [f"{metrics['n']:,} cases, {len(classes)} classes. AUROC {auroc}; kappa {kappa}.",
             (f"95% CIs: percentile bootstrap over cases ({metrics['n_bootstrap']:,} resamples)."
              if metrics.get("n_bootstrap") else "No confidence intervals (n_bootstrap = 0)."), "",
             "| Metric | Value | 95% CI |", "|---|---:|---:|"]
    for key in SCALAR_METRICS:
        interval = _interval(metrics.get("ci95", {}).get(key))
        lines.append(f"| {_LABELS[key]} | {_number(metrics.get(key))} | {interval} |")
    return lines


def format_markdown(metrics: dict, title: str = "Evaluation", figures: tuple[str, ...] = ()) -> str:
    """The Markdown report of a ``compute_metrics`` dict: scalar table with CIs, per-class table, confusion."""
    classes = metrics["classes"]
    lines = [f"# {title}", "", *metrics_table(metrics)]
    lines += ["", "## Per class", "", "| Class | Precision | Recall | F1 | AUROC (one-vs-rest) | Support |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in classes:
        row = metrics["per_class"][name]
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
                     f"{_number(row['auroc'])} | {row['support']:,} |")
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(f"{v:,}" for v in row) + " |")
    lines.append("")
    lines += [f"![{Path(figure).stem}]({figure})" for figure in figures]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(metrics: dict, path: Path) -> Path:
    matrix = np.asarray(metrics["confusion_matrix"])
    classes = metrics["classes"]
    side = 2.5 + 0.6 * len(classes)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.add_subplot()
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=axes, cmap="Blues", colorbar=True,
                                                                xticks_rotation=45, values_format="d")
    axes.set_title("Confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_roc(y_true, probs, classes: list[str], path: Path) -> Path:
    """ROC of the positive class (binary) or one-vs-rest ROC of every class present."""
    y_true = np.asarray(y_true).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], 1)
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot()
    shown = [1] if len(classes) == 2 else range(len(classes))
    for k in shown:
        positive = y_true == k
        if 0 < positive.sum() < len(y_true):
            RocCurveDisplay.from_predictions(positive, probs[:, k], name=classes[k], ax=axes, plot_chance_level=False)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set_title("ROC" if len(classes) == 2 else "ROC (one-vs-rest)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def write_report(metrics: dict, out_dir: str | Path, probs=None, y_true=None, title: str = "Evaluation") -> dict:
    """Write ``metrics.json``, ``report.md``, ``confusion_matrix.png`` and, given ``probs`` and ``y_true``,
    ``roc.png`` into ``out_dir`` (created). Returns {name: path} of the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"metrics.json": out_dir / "metrics.json"}
    written["metrics.json"].write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    written["confusion_matrix.png"] = plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")
    if probs is not None and y_true is not None:
        written["roc.png"] = plot_roc(y_true, probs, metrics["classes"], out_dir / "roc.png")
    figures = tuple(name for name in written if name.endswith(".png"))
    written["report.md"] = out_dir / "report.md"
    written["report.md"].write_text(format_markdown(metrics, title, figures))
    return written
