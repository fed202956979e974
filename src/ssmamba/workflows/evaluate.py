"""Evaluating a fine-tuned checkpoint on one split of a data set: predictions, metrics with bootstrap CIs, and the
written report (``metrics.json``, ``report.md``, ``report.html``, confusion matrix, ROC).

Used by ``ssmamba evaluate`` and by the demo pipeline. :func:`load_classifier` lives in
:mod:`ssmamba.workflows.classifier` (re-exported here), which ``ssmamba predict`` imports without this module's
metrics and report code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmamba.data import ImageDataset, load_dataset
from ssmamba.errors import CheckpointError
from ssmamba.eval.inference import predict_proba
from ssmamba.eval.metrics import compute_metrics
from ssmamba.eval.report import write_report
from ssmamba.io.runs import write_skipped
from ssmamba.workflows.classifier import Classifier, load_classifier
from ssmamba.workflows.config import EvaluateConfig, PredictConfig

__all__ = ["EvaluateConfig", "PredictConfig", "Classifier", "Evaluation", "load_classifier", "evaluate_checkpoint"]


@dataclass
class Evaluation:
    metrics: dict
    probs: np.ndarray
    labels: np.ndarray
    dataset: ImageDataset
    report: Path  # report.md
    skipped_list: Path | None  # skipped.csv, the files left out (None when none was)


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, out: str | Path, *, split: str = "test",
                        group_column: str | None = None, ordinal: bool = False, n_bootstrap: int = 1000,
                        batch_size: int = 128, num_workers: int = 0, seed: int = 0, tta: bool = False,
                        crop_size: int | None = None, device: str | torch.device = "cpu", progress: bool = True,
                        allow_leakage: bool = False) -> Evaluation:
    """Score ``checkpoint`` on ``split`` of ``data`` and write the report into ``out`` (which the caller claimed).

    Unreadable files are left out and listed in ``out/skipped.csv``. ``crop_size`` defaults to the checkpoint's.
    """
    out = Path(out)
    classifier = load_classifier(checkpoint, device)
    classes = classifier.class_names
    if not classes:
        raise CheckpointError(f"{checkpoint}/config.json has no class_names: is it a fine-tuned checkpoint?")
    dataset = load_dataset(data, split, classifier.transform, classes=classes,
                           crop_size=crop_size or classifier.crop_size, group_column=group_column, seed=seed,
                           allow_leakage=allow_leakage)
    skipped_list = write_skipped(out / "skipped.csv", dataset.skipped)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    probs, labels = predict_proba(classifier.model, loader, tta=tta, progress=progress)
    metrics = compute_metrics(labels, probs, classes, ordinal=ordinal, n_bootstrap=n_bootstrap, seed=seed)
    write_report(metrics, out, probs=probs, y_true=labels,
                 title=f"{checkpoint} on {data} ({split}, n={len(dataset)}{', 8-view TTA' if tta else ''})")
    return Evaluation(metrics, probs, labels, dataset, out / "report.md", skipped_list)
