"""What every MIL head shares: the call signature, padding masks, attention pooling, bag subsampling.

A head maps a bag of instance embeddings to bag logits:

    logits = head(features, coords=None, mask=None)          # (B, N, D) -> (B, num_classes)
    out = head.forward_with_attention(features, coords, mask)   # MILOutput(logits, attention (B, N))
    out = head.predict_bag(features, coords, chunk_size=4096)   # one (N, D) bag, bounded memory, no grad

``attention`` holds one unnormalised score per instance (higher = more important to the decision), the input of
heatmaps; padded instances get NaN.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class MILOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_classes)
    attention: torch.Tensor  # (B, N) per-instance scores before softmax


class MILHead(nn.Module, abc.ABC):
    """Base class: input checks and padding masks here, the aggregation in subclasses' ``_forward_bags``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim} and {num_classes}")
        self.in_dim = in_dim
        self.num_classes = num_classes

    @abc.abstractmethod
    def _forward_bags(self, features: torch.Tensor, coords: torch.Tensor | None) -> MILOutput:
        """Bags of equal size without padding: features (B, N, D), coords (B, N, 2) or None."""

    def forward(self, features: torch.Tensor, coords: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) or (N, D) instance embeddings -> (B, num_classes) logits (B = 1 for a 2D input)."""
        return self.forward_with_attention(features, coords, mask).logits

    def forward_with_attention(self, features: torch.Tensor, coords: torch.Tensor | None = None,
                               mask: torch.Tensor | None = None) -> MILOutput:
        """Logits and per-instance attention scores.

        Args:
            features: (B, N, D) embeddings, or (N, D) for a single bag.
            coords: (B, N, 2) or (N, 2) tile positions (level-0 pixels); used by position-aware heads.
            mask: (B, N) bool, True for real instances and False for padding (bags of unequal size).
        """
        features, coords, mask = self._check(features, coords, mask)
        if mask is None or bool(mask.all()):
            return self._forward_bags(features, coords)
        # Padded batch: each bag alone, so padding cannot leak into attention, scans or positional convs.
        logits, attention = [], torch.full(mask.shape, float("nan"), device=features.device)
        for b in range(len(features)):
            keep = mask[b]
            if not keep.any():
                raise ValueError(f"bag {b} of the batch is empty (its mask is all False)")
            out = self._forward_bags(features[b:b + 1, keep], None if coords is None else coords[b:b + 1, keep])
            logits.append(out.logits)
            attention[b, keep] = out.attention[0].to(attention.dtype)
        return MILOutput(torch.cat(logits), attention)

    @torch.no_grad()
    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs with these per-dimension statistics (of the training instances) from now on."""
        standardisers = [m for m in self.modules() if isinstance(m, Standardise)]
        if not standardisers:
            raise TypeError(f"{type(self).__name__} has no Standardise layer to hold feature statistics")
        for module in standardisers:
            module.mean.copy_(mean.to(module.mean))
            module.std.copy_(std.to(module.std).clamp_min(module.eps))

    @torch.no_grad()
    def predict_bag(self, features: torch.Tensor, coords: torch.Tensor | None = None,
                    chunk_size: int = 4096) -> MILOutput:
        """Inference on one bag of (N, D) features with memory bounded by ``chunk_size`` instances.

        Heads override this with an exact streaming computation; this default runs the plain forward pass, on the
        head's device (bags are loaded on the CPU).
        """
        device = next(self.parameters()).device
        return self.forward_with_attention(features.to(device), None if coords is None else coords.to(device))

    def _check(self, features: torch.Tensor, coords: torch.Tensor | None, mask: torch.Tensor | None):
        if features.ndim == 2:
            features = features.unsqueeze(0)
            coords = coords.unsqueeze(0) if coords is not None and coords.ndim == 2 else coords
            mask = mask.unsqueeze(0) if mask is not None and mask.ndim == 1 else mask
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(f"{type(self).__name__} expects features (B, N, {self.in_dim}), got "
                             f"{tuple(features.shape)}")
        if features.shape[1] == 0:
            raise ValueError("empty bag: features have no instances")
        if coords is not None and coords.shape != (*features.shape[:2], 2):
            raise ValueError(f"coords must be (B, N, 2) = {(*features.shape[:2], 2)}, got {tuple(coords.shape)}")
        if mask is not None and mask.shape != features.shape[:2]:
            raise ValueError(f"mask must be (B, N) = {tuple(features.shape[:2])}, got {tuple(mask.shape)}")
        return features, coords, None if mask is None else mask.bool()


class Standardise(nn.Module):
    """(x - mean) / std per feature dimension, with statistics of the training instances kept as buffers.

    Frozen-encoder features differ in scale by orders of magnitude between dimensions (and between encoders);
    standardised inputs let one learning rate suit them all. Identity until ``MILHead.set_feature_statistics``.
    """

    eps = 1e-6

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class GatedAttentionPool(nn.Module):
    """Gated attention pooling of Ilse et al. (2018): score_i = w . (tanh(V h_i) * sigmoid(U h_i)).

    The sigmoid gate lets a dimension switch the tanh response off, which the plain tanh form cannot express
    for inputs where tanh is near-linear.
    """

    def __init__(self, dim: int, attention_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.gate = nn.Sequential(nn.Linear(dim, attention_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attention_dim, 1)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) -> (B, N) unnormalised attention scores."""
        return self.score(self.value(hidden) * self.gate(hidden)).squeeze(-1)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, dim) -> pooled (B, dim), scores (B, N)."""
        scores = self.scores(hidden)
        weights = F.softmax(scores, dim=-1)
        return torch.einsum("bn,bnd->bd", weights, hidden), scores


class StreamingAttentionPool:
    """Exact softmax-attention pooling over chunks (online softmax), so a bag never has to fit in memory at once.

    Keeps the running maximum score m, the sum s of exp(score - m) and the weighted sum of embeddings; when a chunk
    raises the maximum, earlier sums are rescaled by exp(m_old - m_new).
    """

    def __init__(self) -> None:
        self.max_score: torch.Tensor | None = None
        self.weight_sum: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None

    def update(self, hidden: torch.Tensor, scores: torch.Tensor) -> None:
        """hidden (B, n, dim), scores (B, n) of one chunk."""
        chunk_max = scores.max(dim=-1).values
        new_max = chunk_max if self.max_score is None else torch.maximum(self.max_score, chunk_max)
        weights = torch.exp(scores - new_max[:, None])
        chunk_pooled = torch.einsum("bn,bnd->bd", weights, hidden)
        if self.max_score is None:
            self.weight_sum, self.pooled = weights.sum(-1), chunk_pooled
        else:
            rescale = torch.exp(self.max_score - new_max)
            self.weight_sum = self.weight_sum * rescale + weights.sum(-1)
            self.pooled = self.pooled * rescale[:, None] + chunk_pooled
        self.max_score = new_max

    def result(self) -> torch.Tensor:
        """(B, dim) softmax-weighted mean of everything seen."""
        if self.pooled is None:
            raise ValueError("no chunk was pooled")
        return self.pooled / self.weight_sum[:, None]


def subsample_bag(features: torch.Tensor, coords: torch.Tensor | None, max_instances: int | None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random subset of at most ``max_instances`` of an (N, D) bag, in the original order (training only).

    Caps the memory and time of one training step on 100k-tile bags and acts as augmentation; evaluation uses
    the whole bag (``predict_bag``).
    """
    if max_instances is None or len(features) <= max_instances:
        return features, coords
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}")
    keep = torch.randperm(len(features), generator=generator)[:max_instances].sort().values.to(features.device)
    return features[keep], None if coords is None else coords[keep]


def drop_instances(features: torch.Tensor, coords: torch.Tensor | None, rate: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop each instance of an (N, D) bag with probability ``rate`` (at least one is kept); training only."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"instance dropout rate must be in [0, 1), got {rate}")
    keep = torch.rand(len(features), generator=generator) >= rate
    if not keep.any():
        keep[torch.randint(len(features), (1,), generator=generator)] = True
    keep = keep.to(features.device)
    return features[keep], None if coords is None else coords[keep]
