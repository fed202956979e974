"""Selective scan for CUDA tensors: mamba_ssm's fused kernel when it imports, else our Triton kernels, else PyTorch.

The Triton path (``scan_triton``) keeps the state in registers and needs no build step, so a user without mamba_ssm
(which compiles against one exact torch and CUDA) still trains at full sequence length. Without Triton (and for
float64, which the kernels do not compute in) the reference recurrence runs as is: slow, but a sequential form, so
no log-space cumulative sums that overflow for large Δ. The directional scan (DMS) without mamba_ssm runs our
in-place Triton kernels (``directional_triton``), which read the token grid in each direction's order with no
reordered copies. Importing this module touches neither CUDA, Triton nor mamba_ssm.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import torch

from ssmamba.ops.contract import check_scan_inputs
from ssmamba.ops.directional import directional_scan_reordered
from ssmamba.ops.scan_ref import StepsFn, run_scan, scan_steps


@functools.lru_cache(maxsize=1)
def mamba_ssm_scan() -> tuple[Callable | None, str]:
    """(mamba_ssm's selective_scan_fn or None, why). Imported once, on first need."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError, RuntimeError, AttributeError) as error:  # not installed, or built for another CUDA
        return None, f"mamba_ssm unavailable ({type(error).__name__}: {error})"
    import mamba_ssm

    return selective_scan_fn, f"mamba_ssm {getattr(mamba_ssm, '__version__', '?')} fused kernel"


@functools.lru_cache(maxsize=1)
def fallback_recurrence() -> tuple[StepsFn, str]:
    """(steps, why) of the path used without mamba_ssm: the Triton kernels if Triton imports, else the reference
    loop."""
    if importlib.util.find_spec("triton") is not None:
        try:
            from ssmamba.ops.scan_triton import triton_scan_steps
        except (ImportError, RuntimeError) as error:  # a Triton too old for the kernels' language features
            why = f"Triton kernels unavailable ({type(error).__name__}: {error})"
        else:
            return triton_scan_steps, "Triton selective-scan kernels (forward + backward)"
    else:
        why = "Triton not installed"
    return scan_steps, f"PyTorch reference loop ({why}; slow)"


@functools.lru_cache(maxsize=1)
def directional_kernel() -> tuple[Callable | None, str]:
    """(our in-place Triton directional scan or None, why): the directional path without mamba_ssm."""
    if importlib.util.find_spec("triton") is None:
        return None, "Triton not installed"
    try:
        from ssmamba.ops.directional_triton import directional_scan_triton
    except (ImportError, RuntimeError) as error:  # a Triton too old for the kernels' language features
        return None, f"Triton directional kernels unavailable ({type(error).__name__}: {error})"
    return directional_scan_triton, "Triton directional-scan kernels (in place)"


def status() -> tuple[bool, str]:
    """(available, why) of the cuda backend; imports mamba_ssm and Triton but launches nothing."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    fused, why = mamba_ssm_scan()
    if fused is not None:
        return True, why
    return True, f"{fallback_recurrence()[1]}, {directional_kernel()[1]}; {why}"


def _call_mamba_ssm(fused: Callable, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    # mamba_ssm's kernel wants delta/B/C/z in u's dtype and A/D/delta_bias in float32
    like_u = [None if t is None else t.to(u.dtype) for t in (delta, B, C, z)]
    fp32 = [None if t is None else t.float() for t in (A, D, delta_bias)]
    delta, B, C, z = like_u
    A, D, delta_bias = fp32
    return fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_scan_cuda(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan on CUDA tensors; same contract as `selective_scan_ref`."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cuda":
        raise ValueError(f"selective_scan: the 'cuda' backend needs CUDA tensors, but `u` is on {u.device}")
    fused, _ = mamba_ssm_scan()
    if fused is not None and u.dtype != torch.float64:  # the fused kernel has no float64 instantiation
        return _call_mamba_ssm(fused, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    steps = fallback_recurrence()[0] if u.dtype != torch.float64 else scan_steps  # the kernels compute in float32
    return run_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, steps=steps)


def directional_scan_cuda(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = False, *,
                          directions, height: int, width: int) -> torch.Tensor:  # fmt: skip
    """Directional scan on CUDA tensors; same contract as `directional_scan_ref`.

    With mamba_ssm, its fused kernel runs over reordered copies of the sequences; without it, our Triton kernels
    read the grid in place (``directional_triton``); float64, or no Triton, takes the reordered reference loop.
    """
    if u.device.type != "cuda":  # both paths below check the inputs' shapes
        raise ValueError(f"directional_scan: the 'cuda' backend needs CUDA tensors, but `u` is on {u.device}")
    in_place = directional_kernel()[0]
    if mamba_ssm_scan()[0] is None and in_place is not None and u.dtype != torch.float64:
        return in_place(u, delta, A, B, C, D, delta_bias, delta_softplus, directions=directions, height=height,
                        width=width)  # fmt: skip
    return directional_scan_reordered(selective_scan_cuda, u, delta, A, B, C, D, delta_bias, delta_softplus,
                                      directions=directions, height=height, width=width)  # fmt: skip
