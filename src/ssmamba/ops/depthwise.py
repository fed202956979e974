"""Depthwise 2D convolution (stride 1, 'same' padding, odd square kernel) as SSMamba's LPR and DMS use it.

Two CPU measures (``python benchmarks/depthwise.py``, ``benchmarks/results/depthwise.md``):

* **float32 under CPU autocast.** oneDNN's bfloat16 depthwise convolution is slower than its float32 one on CPU,
  and its backward much slower on the small token grids of the state-space stages (fwd+bwd of a 7x7 conv over a 2x2
  grid of 384 channels, batch 64: 8.8 ms in bfloat16, 3.4 ms in float32). These convolutions are a small share of
  the model's arithmetic, so float32 costs nothing in speed and gains precision; a float32 result also saves the
  cast back where it feeds the float32 residual stream (LPR).
* **The weight gradient from our kernel.** oneDNN's depthwise weight gradient is 5-70x slower than its forward for
  7x7 kernels on those grids; ``csrc/depthwise_cpu.cpp`` computes it channels-last in a few times less. The forward
  and the input gradient (a convolution with the flipped kernel) stay oneDNN's. Where the compiled kernel is
  unavailable (``SSMAMBA_NO_BUILD=1``, no compiler), the plain convolution's autograd runs instead: the same values.

Elsewhere (CUDA, or no gradient wanted) this is ``F.conv2d(..., groups=channels)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmamba.ops.scan_cpu import ExtensionBuildError, load_extension

__all__ = ["depthwise_conv2d", "depthwise_conv2d_cpu"]

_KERNEL_DTYPES = (torch.float32, torch.float64)  # the compiled weight gradient's; others (a bfloat16 model) use oneDNN


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])


class _DepthwiseConv2dCpu(torch.autograd.Function):
    """oneDNN forward and input gradient, our kernel's weight gradient; one floating dtype throughout."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _conv(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        if not (grad_out.is_contiguous() or grad_out.is_contiguous(memory_format=torch.channels_last)):
            # e.g. the expanded gradient of a sum: oneDNN takes a slow path for it (20 ms instead of 1)
            grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # stride 1, same padding: the transposed conv is the conv with the kernel flipped
            with torch.autocast("cpu", enabled=False):  # a backward run under autocast stays in the forward's dtype
                grad_x = _conv(grad_out, weight.flip(-1, -2), None)
        if ctx.needs_input_grad[1]:
            grad_weight = load_extension().depthwise_weight_grad(x, grad_out, weight.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias


def depthwise_conv2d_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The convolution with our CPU kernel's weight gradient; raises :class:`ExtensionBuildError` if it cannot be
    built. CPU tensors of one floating dtype."""
    load_extension()  # fail here, before autograd sees anything
    return _DepthwiseConv2dCpu.apply(x, weight, bias)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(B, C, H, W)`` conv with ``weight (C, 1, k, k)`` (odd k), ``groups=C`` and 'same' padding; float32 under CPU
    autocast, otherwise in the dtype autocast or the inputs give (see the module docstring)."""
    if x.device.type != "cpu":
        return _conv(x, weight, bias)
    if torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return depthwise_conv2d(x.float(), weight.float(), None if bias is None else bias.float())
    wants_weight_grad = torch.is_grad_enabled() and weight.requires_grad
    if not wants_weight_grad or x.dtype != weight.dtype or x.dtype not in _KERNEL_DTYPES:
        return _conv(x, weight, bias)
    try:
        return depthwise_conv2d_cpu(x, weight, bias)
    except ExtensionBuildError:  # the scan reports the build failure (ssmamba info, its one-time warning)
        return _conv(x, weight, bias)
