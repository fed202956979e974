"""AdamW (its parameter groups: no decay on norms/biases/SSM dynamics, layer-wise LR decay; the fused kernel),
warm-up + cosine, and inverse-frequency class weights for the loss: shared by pretraining, fine-tuning and MIL head
training."""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.models import group_parameters
from torch import nn

__all__ = ["adamw", "param_groups", "warmup_cosine", "layer_ids", "class_weights"]


def adamw(groups, lr: float, device: torch.device | str, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``groups`` (parameters or :func:`param_groups`), with the fused kernel on CPU and
    CUDA: one call updates every parameter instead of a dozen small ops per tensor. One step (1 thread, CPU time):
    ssmamba_tiny_fast 22.9 -> 7.5 ms, ResNet-18 49.7 -> 8.0 ms, a tenth of a small MIL bag's training step."""
    return torch.optim.AdamW(groups, lr=lr, fused=torch.device(device).type in ("cpu", "cuda"), **kwargs)


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth index of every parameter from the model's timm-style ``group_matcher()``, grouped by timm's own
    ``group_parameters``: stem 0, then blocks in order, the head (what no pattern matches) last. Returns
    ``(name -> layer id, number of layers)``."""
    groups = group_parameters(model, model.group_matcher(coarse=False))
    return {name: layer for layer, names in groups.items() for name in names}, len(groups)


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0,
                 extra_modules: dict[str, nn.Module] | None = None) -> list[dict]:
    """AdamW groups. ``layer_decay < 1`` scales the LR of layer ``i`` of ``n`` by ``layer_decay ** (n - 1 - i)``
    (BEiT-style: early layers of a pretrained encoder move least). ``extra_modules`` (e.g. a MAMIM decoder) train
    at the full LR. 1-d tensors and the parameters that ``model.no_weight_decay()`` names (full names, as timm's
    models give them) are not decayed."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    ids, n_layers = layer_ids(model) if layer_decay < 1.0 else ({}, 1)
    groups: dict[tuple[int, bool], dict] = {}

    def add(name: str, param: torch.Tensor, layer: int) -> None:
        if not param.requires_grad:
            return
        no_decay = param.ndim <= 1 or name in skip
        scale = layer_decay ** (n_layers - 1 - layer)
        group = groups.setdefault((layer, no_decay), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                      "lr": lr * scale, "lr_scale": scale})
        group["params"].append(param)

    for name, param in model.named_parameters():
        add(name, param, ids.get(name, n_layers - 1))
    for prefix, module in (extra_modules or {}).items():
        for name, param in module.named_parameters():
            add(f"{prefix}.{name}", param, n_layers - 1)
    return list(groups.values())


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to each group's LR over ``warmup_steps``, then cosine down to ``min_lr_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over classes present: ``(n_classes,)``."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)
