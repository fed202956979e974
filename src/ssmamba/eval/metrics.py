"""Classification metrics with bootstrap confidence intervals, and k-fold summaries.

Point estimates come from scikit-learn. The bootstrap (default 1,000 resamples of the cases) does not call
scikit-learn per resample, which would take seconds: every resample is a vector of case counts ``w`` (how often
each case was drawn), so its confusion matrix is ``w @ one_hot(true * K + pred)`` and its AUROC a weighted
Mann-Whitney statistic over pre-sorted scores. ``tests/eval`` checks both paths agree with scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix,
                             f1_score, precision_recall_fscore_support, roc_auc_score)

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc", "kappa")
_CHUNK = 100  # resamples per vectorised step: bounds memory at CHUNK x N counts


def _check_inputs(y_true, probs, class_names) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(f"need at least two class names, got {list(class_names)}")
    if probs.ndim == 1 and n_classes == 2:
        probs = np.stack([1 - probs, probs], 1)  # binary: probability of the positive class
    if probs.ndim != 2 or probs.shape != (len(y_true), n_classes):
        raise ValueError(f"probs must be (N={len(y_true)}, K={n_classes}) for classes {list(class_names)}; "
                         f"got shape {probs.shape}")
    if len(y_true) == 0:
        raise ValueError("no cases to evaluate (y_true is empty)")
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true holds labels outside 0..{n_classes - 1}: {sorted(set(y_true.tolist()))}")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values")
    return y_true, probs


def compute_metrics(y_true: Sequence[int], probs, class_names: Sequence[str], ordinal: bool = False,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of predicted class probabilities against true labels.

    Args:
        y_true: (N,) true class indices.
        probs: (N, K) class probabilities or scores (prediction = argmax); for K = 2 also (N,) positive-class
            probabilities.
        class_names: K names, in label order.
        ordinal: classes are ordered grades: kappa is quadratic-weighted.
        n_bootstrap: resamples for the 95 % percentile intervals; 0 skips them.

    Returns a JSON-ready dict: ``n``, ``classes``, the scalars of ``SCALAR_METRICS`` (``auroc`` is the AUROC of
    the positive class when K = 2, else macro one-vs-rest over classes present; ``None`` when undefined),
    ``kappa_weights``, ``ci95`` ({metric: [low, high]}), ``per_class`` ({name: precision, recall, f1, support,
    auroc}), ``confusion_matrix`` (rows true, columns predicted), ``n_bootstrap``.
    """
    y_true, probs = _check_inputs(y_true, probs, class_names)
    n_classes = len(class_names)
    labels = list(range(n_classes))
    y_pred = probs.argmax(1)
    kappa_weights = "quadratic" if ordinal else None
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                                     zero_division=0)
    class_auroc = _per_class_auroc(y_true, probs)
    metrics = {
        "n": int(len(y_true)),
        "classes": list(class_names),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "auroc": _summary_auroc(class_auroc),
        "kappa": _finite_or_none(cohen_kappa_score(y_true, y_pred, labels=labels, weights=kappa_weights)),
        "kappa_weights": kappa_weights,
        "per_class": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                   "support": int(support[k]), "auroc": class_auroc[k]}
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n_bootstrap": int(n_bootstrap),
        "ci95": {},
    }
    if n_bootstrap > 0:
        samples = bootstrap_metrics(y_true, probs, ordinal=ordinal, n_bootstrap=n_bootstrap, seed=seed)
        for name, values in samples.items():
            values = values[np.isfinite(values)]
            metrics["ci95"][name] = ([float(v) for v in np.percentile(values, [2.5, 97.5])]
                                     if len(values) else None)
    return metrics


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _per_class_auroc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """One-vs-rest AUROC of every class; None for a class with no positives or no negatives."""
    result = []
    for k in range(probs.shape[1]):
        positive = y_true == k
        result.append(float(roc_auc_score(positive, probs[:, k])) if 0 < positive.sum() < len(y_true) else None)
    return result


def _summary_auroc(class_auroc: list[float | None]) -> float | None:
    if len(class_auroc) == 2:
        return class_auroc[1]
    defined = [a for a in class_auroc if a is not None]
    return float(np.mean(defined)) if defined else None


def bootstrap_metrics(y_true: np.ndarray, probs: np.ndarray, ordinal: bool = False, n_bootstrap: int = 1000,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """(n_bootstrap,) values of every scalar metric over case resamples; NaN where a resample leaves it undefined.

    AUROC is NaN in resamples missing a class (for K > 2: missing any class, so every resample averages the same
    classes).
    """
    n, n_classes = probs.shape
    y_pred = probs.argmax(1)
    cell = np.eye(n_classes * n_classes)[y_true * n_classes + y_pred]  # (N, K*K) one-hot confusion cell per case
    auroc_parts = [_AurocParts(y_true == k, probs[:, k]) for k in range(n_classes)]
    rng = np.random.default_rng(seed)
    results = {name: [] for name in SCALAR_METRICS}
    for start in range(0, n_bootstrap, _CHUNK):
        batch = min(_CHUNK, n_bootstrap - start)
        draws = rng.integers(0, n, (batch, n))
        offsets = (np.arange(batch) * n)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=batch * n).reshape(batch, n).astype(np.float64)
        matrices = (counts @ cell).reshape(batch, n_classes, n_classes)  # (B, K, K) rows true, columns predicted
        for name, values in scores_from_confusion(matrices, ordinal).items():
            results[name].append(values)
        class_auc = np.stack([parts.auroc(counts) for parts in auroc_parts], 1)  # (B, K)
        if n_classes == 2:
            results["auroc"].append(class_auc[:, 1])
        else:
            results["auroc"].append(class_auc.mean(1))  # NaN when any class is missing from the resample
    return {name: np.concatenate(parts) for name, parts in results.items()}


def scores_from_confusion(matrices: np.ndarray, ordinal: bool = False) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro/weighted F1 and kappa of (B, K, K) confusion matrices (rows = true).

    Conventions follow scikit-learn: recall of a class absent from the truth is left out of balanced accuracy;
    F1 of a class with no true and no predicted cases is 0; kappa is NaN when chance agreement is total.
    """
    matrices = np.asarray(matrices, dtype=np.float64)
    n_classes = matrices.shape[-1]
    total = matrices.sum((1, 2))
    true_counts, pred_counts = matrices.sum(2), matrices.sum(1)  # (B, K)
    hits = np.diagonal(matrices, axis1=1, axis2=2)               # (B, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = hits / true_counts
        balanced = np.nanmean(np.where(true_counts > 0, recall, np.nan), 1)
        f1 = np.where(true_counts + pred_counts > 0, 2 * hits / (true_counts + pred_counts), 0.0)
        index = np.arange(n_classes)
        weights = ((index[:, None] - index[None, :]) ** 2 if ordinal
                   else (index[:, None] != index[None, :]).astype(np.float64))
        expected = true_counts[:, :, None] * pred_counts[:, None, :] / total[:, None, None]
        kappa = 1 - (weights * matrices).sum((1, 2)) / (weights * expected).sum((1, 2))
    return {
        "accuracy": hits.sum(1) / total,
        "balanced_accuracy": balanced,
        "macro_f1": f1.mean(1),
        "weighted_f1": (f1 * true_counts).sum(1) / total,
        "kappa": np.where(np.isfinite(kappa), kappa, np.nan),
    }


class _AurocParts:
    """Weighted Mann-Whitney AUROC of one class's scores for any vector of case counts.

    AUROC = sum over (positive i, negative j) of w_i w_j [s_i > s_j, ties 1/2] / (W_pos W_neg). Negatives are
    sorted once; for each positive, the negatives scoring below it (and tying with it) are a slice of that order,
    so a resample only needs a cumulative sum of its negative counts.
    """

    def __init__(self, positive: np.ndarray, scores: np.ndarray):
        self.positive = np.flatnonzero(positive)
        negative = np.flatnonzero(~positive)
        order = np.argsort(scores[negative], kind="stable")
        self.negative_sorted = negative[order]
        sorted_scores = scores[self.negative_sorted]
        self.below = np.searchsorted(sorted_scores, scores[self.positive], side="left")       # (P,)
        self.below_or_tied = np.searchsorted(sorted_scores, scores[self.positive], side="right")

    def auroc(self, counts: np.ndarray) -> np.ndarray:
        """(B,) AUROC for (B, N) case counts; NaN where a resample has no positives or no negatives."""
        if len(self.positive) == 0 or len(self.negative_sorted) == 0:
            return np.full(len(counts), np.nan)
        negative_counts = counts[:, self.negative_sorted]
        cumulative = np.concatenate([np.zeros((len(counts), 1)), negative_counts.cumsum(1)], 1)  # (B, Nneg + 1)
        below = cumulative[:, self.below]
        tied = cumulative[:, self.below_or_tied] - below
        positive_counts = counts[:, self.positive]
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((positive_counts * (below + 0.5 * tied)).sum(1)
                    / (positive_counts.sum(1) * negative_counts.sum(1)))


def summarise_folds(fold_metrics: Sequence[dict], keys: Sequence[str] = SCALAR_METRICS) -> dict:
    """Mean and sample standard deviation (ddof=1) of each scalar metric over k folds.

    Returns ``{metric: {"mean", "std", "n", "values", "text"}}`` with ``text`` like ``"0.912 ± 0.021"``; folds
    where a metric is ``None`` are left out of its statistics (``n`` says how many counted).
    """
    if not fold_metrics:
        raise ValueError("summarise_folds needs at least one fold's metrics")
    summary = {}
    for key in keys:
        values = [float(m[key]) for m in fold_metrics if m.get(key) is not None]
        if not values:
            continue
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": mean, "std": std, "n": len(values), "values": values,
                        "text": f"{mean:.3f} ± {std:.3f}"}
    return summary
