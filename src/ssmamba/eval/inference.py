"""Batched inference: class probabilities and embeddings over a DataLoader.

Test-time augmentation (``tta=True``) averages the softmax over the eight dihedral views of each image (four 90°
rotations, each with and without a horizontal flip). Tissue has no preferred orientation, and the training transforms
already draw these views, so averaging over them removes orientation noise at 8x the inference cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ssmamba.errors import NonFiniteOutputError

__all__ = ["predict_proba", "embed", "dihedral_views", "class_probabilities", "check_finite_output"]


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (inputs follow them); CPU for a model without parameters."""
    return next(model.parameters(), torch.empty(0)).device


def check_finite_output(model: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """``output`` unchanged, or :class:`NonFiniteOutputError` naming the model's checkpoint if it has NaN/inf."""
    if not bool(torch.isfinite(output).all()):
        source = getattr(model, "_checkpoint", None) or f"{type(model).__name__} (no checkpoint)"
        raise NonFiniteOutputError(f"the model from {source} gave non-finite (NaN/inf) outputs; no predictions were "
                                   "written. Its weights or the inputs are broken: use another checkpoint")
    return output


def dihedral_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The eight rotations/reflections of a batch ``(B, C, H, W)``; ``H != W`` gives ``(B, C, W, H)`` for odd turns."""
    turns = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    return turns + [view.flip(3) for view in turns]


@torch.no_grad()
def class_probabilities(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax ``(B, n_classes)`` float32 of one batch; with ``tta`` the mean over :func:`dihedral_views`."""
    images = images.to(_device_of(model))
    views = dihedral_views(images) if tta else [images]
    probs = torch.stack([torch.softmax(model(view).float(), dim=1) for view in views]).mean(0).cpu()
    return check_finite_output(model, probs)


@torch.no_grad()
def predict_proba(model: nn.Module, loader, progress: bool = True, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, n_classes)`` float32 and labels ``(N,)`` int64 of every batch of ``loader``.

    ``tta``: average over the eight dihedral views of each image (see the module docstring).
    """
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for images, target in tqdm(loader, disable=not progress, desc="predict", unit="batch"):
        probs.append(class_probabilities(model, images, tta).numpy())
        labels.append(np.asarray(target))
    model.train(was_training)
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


@torch.no_grad()
def embed(model: nn.Module, loader, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pooled embeddings ``(N, D)`` float32 (the model must return embeddings, e.g. ``num_classes=0``) and labels."""
    model.eval()
    feats, labels = [], []
    for images, target in tqdm(loader, disable=not progress, desc="embed", unit="batch"):
        output = model(images.to(_device_of(model))).float().flatten(1).cpu()
        feats.append(check_finite_output(model, output).numpy())
        labels.append(np.asarray(target))
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64)
