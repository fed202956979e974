"""Evaluating a fine-tuned checkpoint on one split of a data set: predictions, metrics with bootstrap CIs, and the
written report (``metrics.json``, ``report.md``, ``report.html``, confusion matrix, ROC).

Used by ``ssmamba evaluate`` and by the demo pipeline; ``ssmamba predict`` shares :func:`load_classifier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssmamba.data import ImageDataset, load_dataset
from ssmamba.data.transforms import eval_transform
from ssmamba.errors import CheckpointError
from ssmamba.eval.inference import predict_proba
from ssmamba.eval.metrics import compute_metrics
from ssmamba.eval.report import write_report
from ssmamba.io.runs import write_skipped
from ssmamba.models import create_model
from ssmamba.workflows.config import EvaluateConfig, PredictConfig

__all__ = ["EvaluateConfig", "PredictConfig", "Classifier", "Evaluation", "load_classifier", "evaluate_checkpoint"]

@dataclass
class Classifier:
    """A fine-tuned model in eval mode, the transform it was trained with, and its ``pretrained_cfg``."""

    model: nn.Module
    transform: object
    cfg: dict

    @property
    def class_names(self) -> list[str] | None:
        return self.cfg.get("class_names")

    @property
    def crop_size(self) -> int:
        """Side of nucleus crops (points CSVs) the model was trained on (32 when its config does not say)."""
        return self.cfg.get("crop_size") or 32


def load_classifier(checkpoint: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """The model of ``checkpoint`` (on ``device``) with the eval transform (size, mean, std) of its config.json.

    Raises:
        CheckpointError: the checkpoint has no classification head (an encoder, e.g. from pretraining).
    """
    model = create_model(checkpoint=checkpoint).eval().to(device)
    cfg = model.pretrained_cfg
    if not model.num_classes:
        raise CheckpointError(f"{checkpoint} has no classification head (an encoder, e.g. from pretrain): fine-tune "
                              "it first and pass the fine-tuned checkpoint (e.g. runs/finetune/best)")
    return Classifier(model, eval_transform(cfg["input_size"][-1], cfg["mean"], cfg["std"]), cfg)


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
