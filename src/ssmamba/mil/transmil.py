"""TransMIL (Shao et al., NeurIPS 2021): transformer MIL with a pyramid position-encoding generator (PPEG).

Instances are embedded, padded to a square number by repeating the first ones, laid out on a square token grid
and mixed by two self-attention layers with PPEG in between: depthwise convolutions (7, 5, 3) over that grid
that give tokens a sense of their neighbours without a fixed position table. A class token is read out.

We use exact attention through ``scaled_dot_product_attention``, which on CPU and GPU runs fused kernels that
never materialise the N x N matrix (memory linear in N, time quadratic); the original uses Nystrom attention to
make the time linear as well. Tiles are laid out in the order given, as in the original.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ssmamba.mil.base import MILHead, MILOutput, Standardise
from ssmamba.mil.registry import register_mil_head


class SelfAttention(nn.Module):
    """Multi-head self-attention that can also return the class token's attention to every token."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, dim) -> (B, T, dim) and, if asked, (B, T) head-averaged attention logits of token 0."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        scores = None
        if cls_attention:  # one query row: O(T) extra work, unlike returning the full attention matrix
            scores = (q[:, :, :1] @ k.transpose(-2, -1)).squeeze(2).mean(1) / math.sqrt(dim // self.num_heads)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)), scores


class TransLayer(nn.Module):
    """Pre-norm attention block with a residual connection (TransMIL has no MLP in its layers)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, num_heads, dropout)

    def forward(self, x: torch.Tensor, cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, scores = self.attention(self.norm(x), cls_attention)
        return x + out, scores


class PPEG(nn.Module):
    """Pyramid position encoding generator: identity + depthwise convs of kernel 7, 5 and 3 on the token grid.

    The sum of centred convolutions is one convolution with the summed (zero-padded) kernels, so the forward
    pass runs a single 7 x 7 depthwise convolution whose kernel is the identity plus the three kernels: the same
    function and the same parameters (``convs``), a third of the convolution work in the forward and backward
    pass of a small bag's step.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))
        self.size = max(conv.kernel_size[0] for conv in self.convs)
        identity = torch.zeros(dim, 1, self.size, self.size)
        identity[:, :, self.size // 2, self.size // 2] = 1.0
        self.register_buffer("identity", identity, persistent=False)

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (dim, 1, 7, 7), bias (dim,)) of the one convolution equal to identity + the three."""
        weight = self.identity
        for conv in self.convs:
            pad = (self.size - conv.kernel_size[0]) // 2
            weight = weight + F.pad(conv.weight, (pad, pad, pad, pad))
        return weight, sum(conv.bias for conv in self.convs)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """x (B, 1 + side*side, dim) with the class token first -> same shape."""
        cls_token, tokens = x[:, :1], x[:, 1:]
        grid = tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
        weight, bias = self.merged_kernel()
        grid = F.conv2d(grid, weight, bias, padding=self.size // 2, groups=grid.shape[1])
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


@register_mil_head("transmil")
class TransMIL(MILHead):
    """TransMIL head.

    Args:
        in_dim: instance embedding width D.
        num_classes: number of bag classes.
        dim: token width (512 in the paper).
        num_heads: attention heads.
        dropout: dropout after the input projection and on attention weights.
    """

    def __init__(self, in_dim: int, num_classes: int, dim: int = 256, num_heads: int = 8,
                 dropout: float = 0.1) -> None:
        super().__init__(in_dim, num_classes)
        self.input_proj = nn.Sequential(Standardise(in_dim), nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=0.02)
        self.layer1 = TransLayer(dim, num_heads, dropout)
        self.position = PPEG(dim)
        self.layer2 = TransLayer(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def _forward_bags(self, features: torch.Tensor, coords: torch.Tensor | None) -> MILOutput:
        hidden = self.input_proj(features)  # (B, N, dim)
        num_instances = hidden.shape[1]
        side = math.ceil(math.sqrt(num_instances))
        extra = side * side - num_instances
        if extra:  # fill the square by repeating instances (wrapping around for tiny bags)
            repeat = torch.arange(extra, device=hidden.device) % num_instances
            hidden = torch.cat([hidden, hidden[:, repeat]], dim=1)
        tokens = torch.cat([self.cls_token.expand(len(hidden), -1, -1), hidden], dim=1)
        tokens, _ = self.layer1(tokens)
        tokens = self.position(tokens, side)
        tokens, scores = self.layer2(tokens, cls_attention=True)
        logits = self.classifier(self.norm(tokens[:, 0]))
        return MILOutput(logits, scores[:, 1:1 + num_instances])
