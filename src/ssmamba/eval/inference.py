"""Batched inference: class probabilities and embeddings over a DataLoader."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["predict_proba", "embed"]


@torch.no_grad()
def predict_proba(model: nn.Module, loader, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, n_classes)`` float32 and labels ``(N,)`` int64 of every batch of ``loader``."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for images, target in tqdm(loader, disable=not progress, desc="predict", unit="batch"):
        probs.append(torch.softmax(model(images).float(), dim=1).numpy())
        labels.append(np.asarray(target))
    model.train(was_training)
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


@torch.no_grad()
def embed(model: nn.Module, loader, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pooled embeddings ``(N, D)`` float32 (the model must return embeddings, e.g. ``num_classes=0``) and labels."""
    model.eval()
    feats, labels = [], []
    for images, target in tqdm(loader, disable=not progress, desc="embed", unit="batch"):
        feats.append(model(images).float().flatten(1).numpy())
        labels.append(np.asarray(target))
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64)
