"""Depthwise 2D convolution (stride 1, 'same' padding, odd square kernel) as SSMamba's LPR and DMS use it.

On CPU, when a gradient is wanted, the forward, the input gradient (the forward with the kernel flipped) and the
weight gradient are our kernels (``csrc/depthwise_cpu.cpp``; ``python benchmarks/depthwise.py``,
``benchmarks/results/depthwise.md``):

* **Each tensor in its own dtype.** float32, bfloat16 or float64 storage, read channels-last and computed in
  float32 (float64), the result in the input's dtype. oneDNN's bfloat16 depthwise convolution is slower than its
  float32 one, most of all its backward on small token grids, so under autocast the oneDNN path needed casts to
  float32 and back; here a bfloat16 map under autocast stays bfloat16 and the float32 residual stream (LPR) float32.
* **Only the taps that can be non-zero.** ``radii`` (one per channel) says how far from the centre each channel's
  kernel reaches (``MultiKernelDepthwiseConv`` pads its 3x3 and 5x5 kernels to 7x7); the taps beyond are zero and
  skipped, their weight gradient zero, as are taps that would read the padding.
* **The weight gradient.** oneDNN's is 5-70x slower than its forward for 7x7 kernels on those grids.

Without a gradient, on other devices, or where the kernel is unavailable (``SSMAMBA_NO_BUILD=1``, no compiler) this
is ``F.conv2d(..., groups=channels)`` (float32 under CPU autocast): the same values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmamba.ops.scan_cpu import ExtensionBuildError, load_extension

__all__ = ["depthwise_conv2d", "depthwise_conv2d_cpu"]

_STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
_MAX_KERNEL = 11  # the kernels' largest (csrc/depthwise_cpu.cpp: kMaxRadius)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])


class _DepthwiseConv2dCpu(torch.autograd.Function):
    """Our kernels; x in its storage dtype, weight and bias in x's compute dtype (float32, float64 for float64)."""

    @staticmethod
    def forward(ctx, x, weight, bias, radii):
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.radii = bias is not None, radii
        return load_extension().depthwise_forward(x, weight, bias, radii)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # stride 1, same padding: the transposed conv is the conv with the kernel flipped
            grad_x = load_extension().depthwise_forward(grad_out, weight.flip(-1, -2), None, ctx.radii)
        if ctx.needs_input_grad[1]:
            grad_weight = load_extension().depthwise_weight_grad(x, grad_out, weight.shape[-1], ctx.radii)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3), dtype=weight.dtype)
        return grad_x, grad_weight, grad_bias, None


def depthwise_conv2d_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         radii: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution by our CPU kernels; raises :class:`ExtensionBuildError` if they cannot be built. x: float32,
    bfloat16 or float64 (the result's dtype); weight and bias are cast to x's compute dtype (differentiably)."""
    load_extension()  # fail here, before autograd sees anything
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast("cpu", enabled=False):
        return _DepthwiseConv2dCpu.apply(x, weight.to(dtype), None if bias is None else bias.to(dtype), radii)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     radii: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, C, H, W)`` conv with ``weight (C, 1, k, k)`` (odd k), ``groups=C`` and 'same' padding. ``radii``
    (C,) int64, optional: channel c's weights are zero beyond ``radii[c]`` taps from the centre (a promise that
    lets the CPU kernels skip them). See the module docstring for where it runs and in which dtype."""
    if x.device.type != "cpu":
        return _conv(x, weight, bias)
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if wants_grad and x.dtype in _STORAGE_DTYPES and weight.shape[-1] <= _MAX_KERNEL:
        try:
            return depthwise_conv2d_cpu(x, weight, bias, radii)
        except ExtensionBuildError:  # the scan reports the build failure (ssmamba info, its one-time warning)
            pass
    if torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return _conv(x.float(), weight.float(), None if bias is None else bias.float())
    return _conv(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
