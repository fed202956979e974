"""Slide-level experiments: k-fold cross-validation or a fixed train/val/test split, with saved models and reports,
and the evaluation of saved heads (one, or every fold's averaged) on new bags. Used by ``ssmamba mil``.

Folds are stratified by label and, when the CSV has a patient column, grouped by patient (scikit-learn's
``StratifiedGroupKFold``), so no patient is in both the training and the test part of a fold. A CSV ``fold``
column gives predefined folds instead. Each fold's test bags are scored with the same evaluator as ROI tasks
(``ssmamba.eval.metrics.compute_metrics``) and the folds are summarised as mean ± std; the out-of-fold predictions
of all folds are also scored together.

Under ``torchrun`` every process runs the same folds: each trains the head on its share of every step's bags
(:func:`~ssmamba.mil.training.train_head`) and scores its share of the validation and test bags, whose
predictions are gathered, so the metrics are those of the whole split; rank 0 writes every file.

Output folder::

    OUT/fold_0/{mil_model.safetensors, mil_config.json, predictions.csv, history.json, metrics.json, report.md, ...}
    OUT/cv_summary.json   per-fold metrics, mean ± std, pooled out-of-fold metrics, settings
    OUT/summary.md        pooled metrics with CIs, then a per-fold table; summary.html the same, self-contained,
                          with the pooled confusion matrix and ROC and every fold's loss curves
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ssmamba.eval.metrics import compute_metrics, summarise_folds
from ssmamba.io.atomic import atomic_directory
from ssmamba.io.distributed import processes
from ssmamba.eval.report import (Document, FigureBlock, Heading, Paragraph, Table, metrics_blocks, plot_confusion_matrix,
                                 plot_curves, plot_roc, write_report)
from ssmamba.mil import create_mil_head, load_mil_model, save_mil_model
from ssmamba.mil.bags import BagDataset, BagTable, read_bag_table
from ssmamba.mil.checkpoint import CONFIG_NAME
from ssmamba.mil.inference import BagPredictions, predict
from ssmamba.mil.training import MILTrainConfig, train_config_dict, train_head
from ssmamba.train.engine import STATE_NAME, LayoutChangedError

# Scalar metrics shown in summary tables, in this order, when the evaluator provides them.
SUMMARY_METRICS = ("auroc", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa")


def make_folds(table: BagTable, n_folds: int | None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) per fold.

    ``n_folds=None`` uses the CSV's ``fold`` column (fold k tests the bags marked k). Otherwise stratified k-fold,
    grouped by patient when the table has a patient column.
    """
    labels = np.asarray(table.labels)
    indices = np.arange(len(table.records))
    if n_folds is None:
        folds = [r.fold for r in table.records]
        if any(f is None for f in folds):
            raise ValueError(f"{table.source}: some rows have no 'fold'; give --folds K for automatic folds")
        return [(indices[np.asarray(folds) != k], indices[np.asarray(folds) == k]) for k in sorted(set(folds))]
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    smallest = int(np.bincount(labels).min())
    if smallest < n_folds:
        raise ValueError(f"{table.source}: the rarest class has {smallest} bags, fewer than {n_folds} folds")
    if table.patient_column:
        groups = [r.group for r in table.records]
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return list(splitter.split(indices, labels, groups))
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(indices, labels))


def validation_split(table: BagTable, train_indices: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of a fold's training bags (stratified, patient-grouped) for model selection."""
    if fraction <= 0:
        return train_indices, np.asarray([], dtype=np.int64)
    n_splits = max(2, round(1 / fraction))
    labels = np.asarray(table.labels)[train_indices]
    groups = [table.records[i].group for i in train_indices]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    inner_train, inner_val = next(splitter.split(train_indices, labels, groups))
    return train_indices[inner_train], train_indices[inner_val]


@dataclass
class ExperimentSettings:
    """What to train: the head, its constructor arguments, optimisation, and how to evaluate."""

    head_name: str
    head_kwargs: dict
    train: MILTrainConfig
    val_fraction: float = 0.0
    n_bootstrap: int = 1000
    progress: bool = True


def _fit_and_score(table: BagTable, train_idx, val_idx, test_idx, settings: ExperimentSettings, out_dir: Path,
                   fold_seed: int, extra: dict, resume: bool,
                   reshard: bool = False) -> tuple[dict | None, BagPredictions, list[dict]]:
    """Train one head (or, on ``resume``, continue its training, or take the finished one) and score its test bags.

    The fold folder is written whole at the end (:func:`~ssmamba.io.atomic.atomic_directory`): a folder with a
    head in it is complete, and a resumed run re-scores that head instead of training it again. Until then the
    folder holds the training state that ``resume`` continues from. A fold trained by another number of processes
    or ``accum_steps`` is refused (:class:`~ssmamba.train.engine.LayoutChangedError`) unless ``reshard``.

    Under torchrun every process returns the predictions of all test bags, and rank 0 alone the metrics (the
    others None) after writing the folder."""
    records = table.records
    test_set = BagDataset([records[i] for i in test_idx])
    config = MILTrainConfig(**{**train_config_dict(settings.train), "seed": fold_seed})
    layout = {"processes": processes().world_size, "accum_steps": config.accum_steps}
    finished = resume and (out_dir / CONFIG_NAME).is_file()
    if finished:
        head, saved = load_mil_model(out_dir, device=config.device)
        _check_layout(out_dir / CONFIG_NAME, {k: saved.get(k, 1) for k in layout}, layout, reshard)
        history = json.loads((out_dir / "history.json").read_text())
    else:
        train_set = BagDataset([records[i] for i in train_idx])
        val_set = BagDataset([records[i] for i in val_idx]) if len(val_idx) else None
        torch.manual_seed(fold_seed)
        head = create_mil_head(settings.head_name, train_set.feature_dim, len(table.class_names),
                               **settings.head_kwargs)
        history = train_head(head, train_set, config, val_set, out_dir=out_dir,
                             resume=resume and (out_dir / STATE_NAME).is_file(), progress=settings.progress,
                             reshard=reshard)
    predictions = predict(head, test_set, chunk_size=config.chunk_size, device=config.device,
                          threads=config.threads, across_processes=True)
    if not processes().is_main:
        return None, predictions, history
    metrics = compute_metrics(predictions.y_true, predictions.probs, table.class_names,
                              n_bootstrap=settings.n_bootstrap, seed=fold_seed)
    if finished:
        return metrics, predictions, history
    with atomic_directory(out_dir) as folder:  # replaces the training state: the fold is done
        save_mil_model(head, folder, head_name=settings.head_name, head_kwargs=settings.head_kwargs,
                       class_names=table.class_names, extra={**extra, **layout})
        predictions.write_csv(folder / "predictions.csv", table.class_names)
        (folder / "history.json").write_text(json.dumps(history, indent=1))
        (folder / "split.json").write_text(json.dumps({
            "train": [records[i].slide_id for i in train_idx], "val": [records[i].slide_id for i in val_idx],
            "test": [records[i].slide_id for i in test_idx]}, indent=1))
        plot_curves(_loss_series([history]), folder / "curves.png")
        write_report(metrics, folder, probs=predictions.probs, y_true=predictions.y_true,
                     title=f"{settings.head_name}: {out_dir.name}", extra_figures=("curves.png",))
    return metrics, predictions, history


def _check_layout(path: Path, saved: dict, current: dict, reshard: bool) -> None:
    """Refuse to resume a run whose finished folds were trained with another layout (``processes``,
    ``accum_steps``) than this one, unless ``reshard``: its remaining folds would silently train otherwise."""
    if saved != current and not reshard:
        raise LayoutChangedError(
            f"{path} was trained by {saved['processes']} process(es) with --accum-steps {saved['accum_steps']}, and "
            f"this run has {current['processes']} with {current['accum_steps']}: resume with the same processes and "
            "--accum-steps, or pass --reshard to train the remaining folds with the new layout (no longer "
            "identical to an uninterrupted run)")


def _loss_series(histories: list[list[dict]]) -> dict[str, list[float]]:
    """{"train loss", "val loss"} for one history, {"fold k train", "fold k val"} for several."""
    series = {}
    for k, history in enumerate(histories):
        prefix = f"fold {k} " if len(histories) > 1 else ""
        series[f"{prefix}train loss"] = [record["train_loss"] for record in history]
        if history and "val_loss" in history[0]:
            series[f"{prefix}val loss"] = [record["val_loss"] for record in history]
    return series


def run_cross_validation(table: BagTable, settings: ExperimentSettings, out_dir: str | Path,
                         n_folds: int | None = 5, seed: int = 0, extra: dict | None = None,
                         resume: bool = False, reshard: bool = False) -> dict | None:
    """K-fold CV; returns (and writes to ``cv_summary.json``) per-fold metrics, mean ± std and pooled metrics.

    ``resume``: continue an interrupted run in ``out_dir`` (finished folds are re-scored, the interrupted one
    continues from its training state), to the same heads and predictions as an uninterrupted run; ``reshard``:
    accept a run begun with another number of processes or ``accum_steps``. Under torchrun every process takes
    part and rank 0 writes and returns the summary (the others None)."""
    out_dir = Path(out_dir)
    fold_metrics, pooled_true, pooled_probs, histories = [], [], [], []
    for k, (train_idx, test_idx) in enumerate(make_folds(table, n_folds, seed)):
        train_idx, val_idx = validation_split(table, train_idx, settings.val_fraction, seed + k)
        metrics, predictions, history = _fit_and_score(table, train_idx, val_idx, test_idx, settings,
                                                       out_dir / f"fold_{k}", seed + k, {**(extra or {}), "fold": k},
                                                       resume, reshard)
        fold_metrics.append(metrics)
        histories.append(history)
        pooled_true.append(predictions.y_true)
        pooled_probs.append(predictions.probs)
        if settings.progress and metrics is not None:
            print(f"fold {k}: " + ", ".join(f"{m} {_scalar(metrics, m):.4f}" for m in SUMMARY_METRICS
                                            if _scalar(metrics, m) is not None))
    if not processes().is_main:
        return None
    pooled_true, pooled_probs = np.concatenate(pooled_true), np.concatenate(pooled_probs)
    pooled = compute_metrics(pooled_true, pooled_probs, table.class_names, n_bootstrap=settings.n_bootstrap,
                             seed=seed)
    summary = {"folds": fold_metrics, "summary": summarise_folds(fold_metrics), "pooled_out_of_fold": pooled,
               "settings": {"head": settings.head_name, "head_kwargs": settings.head_kwargs,
                            "train": train_config_dict(settings.train), "val_fraction": settings.val_fraction,
                            "n_folds": n_folds, "seed": seed, "bags": table.describe(),
                            "processes": processes().world_size, **(extra or {})}}
    (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    title = f"{settings.head_name}, {len(fold_metrics)}-fold CV"
    figures = _pooled_figures(out_dir, pooled, pooled_true, pooled_probs, histories)
    summary_document(summary, title, figures).write(out_dir / "summary.md")
    return summary


def _pooled_figures(out_dir: Path, pooled: dict, y_true: np.ndarray, probs: np.ndarray,
                    histories: list[list[dict]]) -> tuple[str, ...]:
    """Confusion matrix and ROC of the pooled out-of-fold predictions, and every fold's loss curves."""
    plot_confusion_matrix(pooled, out_dir / "pooled_confusion_matrix.png")
    plot_roc(y_true, probs, pooled["classes"], out_dir / "pooled_roc.png")
    plot_curves(_loss_series(histories), out_dir / "curves.png")
    return "pooled_confusion_matrix.png", "pooled_roc.png", "curves.png"


def run_fixed_split(table: BagTable, settings: ExperimentSettings, out_dir: str | Path, seed: int = 0,
                    extra: dict | None = None, resume: bool = False, reshard: bool = False) -> dict | None:
    """Train on split=train (select on split=val when present), test on split=test (``resume``: continue an
    interrupted run in ``out_dir``; ``reshard``: as in :func:`run_cross_validation`). Returns the test metrics
    (None on the processes other than rank 0 under torchrun)."""
    splits = np.asarray([r.split for r in table.records])
    if not (splits == "train").any() or not (splits == "test").any():
        raise ValueError(f"{table.source}: the split column needs 'train' and 'test' rows (or use --folds K)")
    indices = np.arange(len(splits))
    metrics, _, _ = _fit_and_score(table, indices[splits == "train"], indices[splits == "val"],
                                   indices[splits == "test"], settings, Path(out_dir), seed, extra or {}, resume,
                                   reshard)
    return metrics


def _scalar(metrics: dict, name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, dict):
        value = value.get("value", value.get("mean"))
    return float(value) if isinstance(value, (int, float, np.floating)) else None


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def summary_document(summary: dict, title: str, figures: tuple[str, ...] = ()):
    """The pooled out-of-fold metrics with their bootstrap CIs and ``figures``, then one row per fold and
    mean ± std, as a report :class:`~ssmamba.eval.report.Document` (``summary.md`` and ``summary.html``)."""
    pooled = summary["pooled_out_of_fold"]
    names = [m for m in SUMMARY_METRICS if m in summary["summary"]]
    rows = [[str(k), str(metrics["n"]), *(_format(_scalar(metrics, m)) for m in names)]
            for k, metrics in enumerate(summary["folds"])]
    means = summary["summary"]
    rows.append(["**mean ± std**", "", *(f"**{means[m]['mean']:.4f} ± {means[m]['std']:.4f}**" for m in names)])
    return Document(title).add(
        Heading("Pooled out-of-fold"),
        Paragraph(f"The test predictions of all folds together ({pooled['n']} bags), scored once."),
        *metrics_blocks(pooled), *(FigureBlock(Path(name), Path(name).stem.replace("_", " ")) for name in figures),
        Heading("Per fold"), Table(["fold", "bags", *names], rows),
        Paragraph(f"Settings: `{json.dumps(summary['settings'], default=_json_default)}`"))


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def saved_heads(model_dir: Path) -> list[Path]:
    """The head folders of ``model_dir``: itself when it is one, else its ``fold_*`` heads (a CV run)."""
    if (model_dir / CONFIG_NAME).is_file():
        return [model_dir]
    heads = sorted(p.parent for p in model_dir.glob(f"fold_*/{CONFIG_NAME}"))
    if not heads:
        raise ValueError(f"{model_dir}: neither a trained head ({CONFIG_NAME}) nor a CV run with fold_*/")
    return heads


@dataclass
class HeadsEvaluation:
    predictions: BagPredictions  # probabilities and attention averaged over the heads
    metrics: dict
    n_heads: int


def evaluate_saved_heads(model_dir: str | Path, csv_path: str | Path, features_dir: str | Path, out_dir: str | Path,
                         *, id_column: str = "slide_id", label_column: str = "label",
                         patient_column: str | None = None, allow_missing: bool = False, n_bootstrap: int = 1000,
                         chunk_size: int = 4096, device: str = "cpu", threads: int | None = None,
                         progress: bool = False) -> HeadsEvaluation:
    """Score the bags of ``csv_path`` with the head(s) in ``model_dir`` (fold heads are averaged) and write
    ``predictions.csv``, the metrics and a report into ``out_dir`` (which the caller claimed)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    heads = [load_mil_model(d, device=device) for d in saved_heads(model_dir)]
    class_names = heads[0][1]["class_names"]
    if any(config["class_names"] != class_names for _, config in heads):
        raise ValueError(f"the heads in {model_dir} were trained with different class lists")
    table = read_bag_table(csv_path, features_dir, id_column=id_column, label_column=label_column,
                           patient_column=patient_column, class_names=class_names, allow_missing=allow_missing)
    dataset = BagDataset(table.records)
    runs = [predict(head, dataset, chunk_size=chunk_size, device=device, threads=threads, progress=progress)
            for head, _ in heads]
    predictions = BagPredictions(runs[0].slide_ids, runs[0].y_true, np.mean([r.probs for r in runs], axis=0),
                                 [np.mean(a, axis=0) for a in zip(*(r.attention for r in runs))])
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.write_csv(out_dir / "predictions.csv", class_names)
    metrics = compute_metrics(predictions.y_true, predictions.probs, class_names, n_bootstrap=n_bootstrap)
    write_report(metrics, out_dir, probs=predictions.probs, y_true=predictions.y_true,
                 title=f"MIL evaluation of {model_dir} ({len(heads)} head(s)) on {Path(csv_path).name}")
    return HeadsEvaluation(predictions, metrics, len(heads))
