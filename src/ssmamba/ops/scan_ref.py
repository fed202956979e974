"""Readable reference selective scan in plain PyTorch: the ground truth every other backend is tested against.

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t          h: (batch, dim, N)
    y_t = C_t · h_t + D u_t,     out = y * silu(z)

It loops over the sequence stepping with ``unbind`` (indexing ``x[..., t]`` inside a loop that autograd records
makes the backward O(L²)). Autograd keeps every step's state, so memory grows as batch·dim·L·N: fine for tests,
slow for training (see ``benchmarks/results/scan.md``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ssmamba.ops.contract import as_grouped, check_scan_inputs, compute_dtype

# (h, u, delta, A, B, C) -> (y, h): runs the recurrence over the last axis; see scan_steps
StepsFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def scan_steps(
    h: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the recurrence over T steps, channels split by group so a group's B_t, C_t broadcast over its channels.

    Args:
        h: (batch, G, dim/G, N) state before the first step.
        u, delta: (batch, G, dim/G, T); delta already biased and softplus-ed.
        A: (G, dim/G, N).
        B, C: (batch, G, N, T).
    Returns:
        y: (batch, G, dim/G, T) = C_t · h_t, and the state after the last step.
    """
    ys = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        # u_t, delta_t: (batch, G, dim/G); B_t, C_t: (batch, G, N)
        decay = torch.exp(delta_t.unsqueeze(-1) * A)  # (batch, G, dim/G, N)
        h = decay * h + (delta_t * u_t).unsqueeze(-1) * B_t.unsqueeze(2)
        ys.append((h * C_t.unsqueeze(2)).sum(-1))
    return torch.stack(ys, dim=-1), h


def run_scan(
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
    steps: StepsFn = scan_steps,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The scan with a pluggable recurrence: `steps` (`scan_steps`, or a kernel with its signature) runs over the
    whole sequence; bias, softplus, D and the z gate are added around it here. Same contract as `selective_scan_ref`."""
    shape = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    out_dtype, dtype = u.dtype, compute_dtype(u)
    batch, dim, length, groups = shape.batch, shape.dim, shape.length, shape.groups
    channels = dim // groups

    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta = F.softplus(delta)
    u_grouped = u.to(dtype).view(batch, groups, channels, length)
    delta_grouped = delta.view(batch, groups, channels, length)
    A_grouped = A.to(dtype).view(groups, channels, shape.state)
    B, C = as_grouped(B).to(dtype), as_grouped(C).to(dtype)  # (batch, G, N, L)

    h = u_grouped.new_zeros(batch, groups, channels, shape.state)
    y, h = steps(h, u_grouped, delta_grouped, A_grouped, B, C)

    y = y.reshape(batch, dim, length)
    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * u.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(out_dtype)
    return (out, h.reshape(batch, dim, shape.state)) if return_last_state else out


def selective_scan_ref(
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
    """Reference selective scan (mamba_ssm semantics), differentiable by autograd.

    Args:
        u, delta: (batch, dim, L). A: (dim, N). B, C: (batch, N, L) or (batch, G, N, L).
        D, delta_bias: (dim,) or None. z: (batch, dim, L) or None (then no gating).
        delta_softplus: apply softplus to delta + delta_bias.
    Returns:
        out (batch, dim, L) in u's dtype; with `return_last_state` also the final state (batch, dim, N), kept in
        the compute dtype (float32, or float64 for float64 inputs) like mamba_ssm.
    """
    return run_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
