"""Evaluation reports: ``metrics.json``, ``report.md``, ``report.html``, ``confusion_matrix.png`` and ``roc.png``.

A report is a :class:`Document` of blocks (headings, paragraphs, tables, figures) rendered twice from the same
blocks: as Markdown, with figures linked, and as one self-contained HTML file, with figures embedded (base64), that
opens in any browser and can be mailed on its own. ``**bold**`` and ``code`` spans work in both.

Figures are drawn on ``matplotlib.figure.Figure`` objects (rendered by Agg), never through pyplot's global state,
so writing a report neither opens windows nor changes the backend of the caller's session.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ssmamba.eval.metrics import SCALAR_METRICS

_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
           "weighted_f1": "Weighted F1", "auroc": "AUROC", "kappa": "Cohen's kappa"}
_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em;border-bottom:2px solid #ddd}
h2{font-size:1.25em;margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.3em .7em}th{background:#f3f3f3}td.num{text-align:right;
font-variant-numeric:tabular-nums}figure{display:inline-block;margin:.5em 1em .5em 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{background:#f5f5f5;padding:0 .2em;font-size:.9em;word-break:break-all}"""


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    """A table; columns after the first are right-aligned numbers unless ``numeric`` is False."""

    headers: list[str]
    rows: list[list[str]]
    numeric: bool = True


@dataclass
class FigureBlock:
    """A PNG (``path``, absolute or relative to the report's folder) with a caption."""

    path: Path
    caption: str


@dataclass
class Document:
    """A report's blocks, rendered by :meth:`to_markdown` and :meth:`to_html`."""

    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Document":
        self.blocks.extend(blocks)
        return self

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            lines += _markdown(block) + [""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def to_html(self, folder: Path) -> str:
        """One HTML page; figures are read from ``folder`` (where relative) and embedded as data URIs."""
        body = "\n".join(_html(block, Path(folder)) for block in self.blocks)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
                f"<h1>{_inline(self.title)}</h1>\n{body}\n</body></html>\n")

    def write(self, markdown_path: Path) -> tuple[Path, Path]:
        """Write ``markdown_path`` and the HTML page beside it (same name, ``.html``); returns both paths."""
        markdown_path = Path(markdown_path)
        markdown_path.write_text(self.to_markdown())
        html_path = markdown_path.with_suffix(".html")
        html_path.write_text(self.to_html(markdown_path.parent))
        return markdown_path, html_path


def _markdown(block) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + block.text]
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Table):
        align = "|---|" + ("---:|" if block.numeric else "---|") * (len(block.headers) - 1)
        return ["| " + " | ".join(block.headers) + " |", align] + ["| " + " | ".join(row) + " |" for row in block.rows]
    if isinstance(block, FigureBlock):
        return [f"![{block.caption}]({block.path.as_posix()})"]
    raise TypeError(f"not a report block: {block!r}")


def _inline(text: str) -> str:
    """Escaped text with ``**bold**`` and ```code``` spans as HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _html(block, folder: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        cell = "<td class=\"num\">" if block.numeric else "<td>"
        rows = "".join("<tr><td>" + _inline(row[0]) + "</td>" + "".join(f"{cell}{_inline(v)}</td>" for v in row[1:])
                       + "</tr>" for row in block.rows)
        head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, FigureBlock):
        path = block.path if block.path.is_absolute() else folder / block.path
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f"<figure><img alt=\"{html.escape(block.caption)}\" src=\"data:image/png;base64,{data}\">"
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    raise TypeError(f"not a report block: {block!r}")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _interval(interval) -> str:
    return "n/a" if not interval else f"{interval[0]:.4f} – {interval[1]:.4f}"


def metrics_blocks(metrics: dict) -> list:
    """What the scalars mean, then a table of each scalar metric with its 95% CI."""
    classes = metrics["classes"]
    kappa = "quadratic-weighted" if metrics.get("kappa_weights") == "quadratic" else "unweighted"
    auroc = "of the positive class" if len(classes) == 2 else "macro one-vs-rest"
    about = (f"{metrics['n']:,} cases, {len(classes)} classes. AUROC {auroc}; kappa {kappa}.\n"
             + (f"95% CIs: percentile bootstrap over cases ({metrics['n_bootstrap']:,} resamples)."
                if metrics.get("n_bootstrap") else "No confidence intervals (n_bootstrap = 0)."))
    rows = [[_LABELS[key], _number(metrics.get(key)), _interval(metrics.get("ci95", {}).get(key))]
            for key in SCALAR_METRICS]
    return [Paragraph(about), Table(["Metric", "Value", "95% CI"], rows)]


def evaluation_document(metrics: dict, title: str = "Evaluation", figures: tuple[str, ...] = ()) -> Document:
    """The report of a ``compute_metrics`` dict: scalar table with CIs, per-class table, confusion, figures."""
    classes = metrics["classes"]
    per_class = [[name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                  _number(row["auroc"]), f"{row['support']:,}"]
                 for name, row in ((name, metrics["per_class"][name]) for name in classes)]
    confusion = [[name, *(f"{v:,}" for v in row)] for name, row in zip(classes, metrics["confusion_matrix"])]
    document = Document(title).add(*metrics_blocks(metrics), Heading("Per class"),
                                   Table(["Class", "Precision", "Recall", "F1", "AUROC (one-vs-rest)", "Support"],
                                         per_class),
                                   Heading("Confusion matrix (rows: true, columns: predicted)"),
                                   Table(["true \\ predicted", *classes], confusion))
    if figures:
        document.add(*(FigureBlock(Path(figure), Path(figure).stem.replace("_", " ")) for figure in figures))
    return document


def format_markdown(metrics: dict, title: str = "Evaluation", figures: tuple[str, ...] = ()) -> str:
    """The Markdown of :func:`evaluation_document`."""
    return evaluation_document(metrics, title, figures).to_markdown()


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
    # sklearn labels the axes "(Positive label: 1)": the boolean one-vs-rest target, not a class of the data
    axes.set_xlabel("False positive rate")
    axes.set_ylabel("True positive rate")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_curves(series: dict[str, list[float]], path: Path, xlabel: str = "epoch", ylabel: str = "loss",
                title: str = "Training curves") -> Path:
    """One line per named series (x = 1, 2, ...); names containing "val" are dashed."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for name, values in series.items():
        axes.plot(np.arange(1, len(values) + 1), values, label=name, linestyle="--" if "val" in name else "-")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def write_report(metrics: dict, out_dir: str | Path, probs=None, y_true=None, title: str = "Evaluation",
                 extra_figures: tuple[str, ...] = ()) -> dict:
    """Write ``metrics.json``, ``report.md``, ``report.html``, ``confusion_matrix.png`` and, given ``probs`` and
    ``y_true``, ``roc.png`` into ``out_dir`` (created); ``extra_figures`` (PNG names in ``out_dir``, e.g. training
    curves) are shown after them. Returns {name: path} of the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"metrics.json": out_dir / "metrics.json"}
    written["metrics.json"].write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    written["confusion_matrix.png"] = plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")
    if probs is not None and y_true is not None:
        written["roc.png"] = plot_roc(y_true, probs, metrics["classes"], out_dir / "roc.png")
    figures = tuple(name for name in written if name.endswith(".png")) + tuple(extra_figures)
    written["report.md"], written["report.html"] = evaluation_document(metrics, title, figures).write(
        out_dir / "report.md")
    return written
