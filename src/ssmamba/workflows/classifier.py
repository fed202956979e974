"""A fine-tuned checkpoint loaded for inference: the model and the eval transform it was trained with.

Its own module, apart from :mod:`ssmamba.workflows.evaluate`, so that `ssmamba predict` loads a classifier without
importing the metrics and report code (sklearn, matplotlib) that only evaluation needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssmamba.data.transforms import eval_transform
from ssmamba.errors import CheckpointError
from ssmamba.models import create_model

__all__ = ["Classifier", "load_classifier"]


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
