"""Random selective-scan problems and how to compare two backends on them (imported by the tests in this folder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class ScanProblem:
    """Inputs of one selective scan (mamba_ssm's shapes) plus the options to call it with."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    delta_bias: torch.Tensor | None
    delta_softplus: bool
    return_last_state: bool

    def tensors(self) -> list[torch.Tensor]:
        values = (self.u, self.delta, self.A, self.B, self.C, self.D, self.z, self.delta_bias)
        return [t for t in values if t is not None]

    def names(self) -> list[str]:
        names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        values = (self.u, self.delta, self.A, self.B, self.C, self.D, self.z, self.delta_bias)
        return [n for n, t in zip(names, values) if t is not None]

    def run(self, scan: Callable, **kwargs):
        return scan(
            self.u, self.delta, self.A, self.B, self.C, self.D, self.z, self.delta_bias,
            delta_softplus=self.delta_softplus, return_last_state=self.return_last_state, **kwargs,
        )  # fmt: skip


def make_problem(
    batch: int = 2,
    dim: int = 8,
    length: int = 16,
    state: int = 4,
    groups: int | None = None,
    with_D: bool = True,
    with_z: bool = True,
    with_delta_bias: bool = True,
    delta_softplus: bool = True,
    return_last_state: bool = True,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = True,
    seed: int = 0,
) -> ScanProblem:
    """A realistic problem: A = -exp(.) like Mamba's A_log, Δ around 0.1 after softplus, unit-scale B, C, u.
    `groups=None` gives the ungrouped (batch, N, L) B and C."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    bc_shape = (batch, state, length) if groups is None else (batch, groups, state, length)
    if delta_softplus:
        delta = randn(batch, dim, length, scale=0.5, shift=-2.0)
    else:  # used as is, so keep it positive
        delta = randn(batch, dim, length).abs() * 0.1
    tensors = dict(
        u=randn(batch, dim, length),
        delta=delta,
        A=-torch.exp(randn(dim, state, scale=0.5)),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(dim) if with_D else None,
        z=randn(batch, dim, length) if with_z else None,
        delta_bias=randn(dim, scale=0.1) if with_delta_bias else None,
    )
    for t in tensors.values():
        if t is not None:
            t.requires_grad_(requires_grad)
    return ScanProblem(**tensors, delta_softplus=delta_softplus, return_last_state=return_last_state)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ over the whole tensor (robust to single tiny entries)."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def outputs_and_grads(problem: ScanProblem, scan: Callable, seed: int = 1, **kwargs) -> dict[str, torch.Tensor]:
    """Run `scan`, back-propagate a fixed random weighting of out (and last_state), return everything by name."""
    result = problem.run(scan, **kwargs)
    out, last_state = result if problem.return_last_state else (result, None)
    g = torch.Generator().manual_seed(seed)
    # weights drawn on the CPU (same numbers for every device), then moved to the outputs' device
    loss = (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)).sum()
    named = {"out": out.detach()}
    if last_state is not None:
        weights = torch.randn(last_state.shape, generator=g, dtype=torch.float64).to(out.device)
        loss = loss + (last_state.double() * weights).sum()
        named["last_state"] = last_state.detach()
    grads = torch.autograd.grad(loss, problem.tensors())
    named.update({f"d{name}": grad for name, grad in zip(problem.names(), grads)})
    return named
