"""Depthwise 2D convolution with a CPU mixed-precision policy: under CPU autocast it runs in float32.

oneDNN's bfloat16 depthwise convolution is slower than its float32 one on CPU, and its backward much slower on the
small token grids of SSMamba's state-space stages: fwd+bwd of a 7x7 depthwise conv over a 2x2 grid of 384 channels
(batch 64) took 8.8 ms in bfloat16 and 3.4 ms in float32, a 3x3 one 7.5 vs 1.8 ms, and the float32 pass was faster at
every grid and kernel size measured up to 14x14 (``python benchmarks/depthwise.py``). Those convolutions are a small
share of the model's arithmetic, so computing them in float32 costs nothing in speed and gains precision; a float32
result also saves the cast back where it feeds the float32 residual stream (LPR). Elsewhere (CUDA, no autocast) this
is ``F.conv2d(..., groups=channels)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d"]


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(B, C, H, W)`` conv with ``weight (C, 1, k, k)`` (odd k), ``groups=C`` and 'same' padding, float32 under CPU
    autocast (see the module docstring); otherwise in the dtype autocast or the inputs give."""
    padding = weight.shape[-1] // 2
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), padding=padding,
                            groups=x.shape[1])
    return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
