"""Gated attention MIL (ABMIL; Ilse, Tomczak and Welling, ICML 2018).

An instance encoder h_i = MLP(x_i), gated attention scores a_i, the softmax-weighted mean of h as the bag
embedding, and a linear classifier. Permutation-invariant and linear in the bag size.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmamba.mil.base import GatedAttentionPool, MILHead, MILOutput, Standardise, StreamingAttentionPool
from ssmamba.mil.registry import register_mil_head


@register_mil_head("abmil")
class ABMIL(MILHead):
    """Gated attention-MIL head.

    Args:
        in_dim: instance embedding width D.
        num_classes: number of bag classes.
        hidden_dim: width of the instance encoder.
        attention_dim: width of the gated attention network.
        dropout: dropout after the instance encoder and inside the attention network.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 256, attention_dim: int = 128,
                 dropout: float = 0.25) -> None:
        super().__init__(in_dim, num_classes)
        self.instance_encoder = nn.Sequential(Standardise(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.pool = GatedAttentionPool(hidden_dim, attention_dim, dropout)
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def _forward_bags(self, features: torch.Tensor, coords: torch.Tensor | None) -> MILOutput:
        hidden = self.instance_encoder(features)  # (B, N, hidden)
        bag, scores = self.pool(hidden)  # (B, hidden), (B, N)
        return MILOutput(self.classifier(bag), scores)

    @torch.no_grad()
    def predict_bag(self, features: torch.Tensor, coords: torch.Tensor | None = None,
                    chunk_size: int = 4096) -> MILOutput:
        """Exact streaming inference: instances are encoded and pooled ``chunk_size`` at a time."""
        features, _, _ = self._check(features, None, None)
        device = next(self.parameters()).device
        pool, scores = StreamingAttentionPool(), []
        for start in range(0, features.shape[1], chunk_size):
            hidden = self.instance_encoder(features[:, start:start + chunk_size].to(device))
            chunk_scores = self.pool.scores(hidden)
            pool.update(hidden, chunk_scores)
            scores.append(chunk_scores.cpu())
        return MILOutput(self.classifier(pool.result()), torch.cat(scores, dim=1))
