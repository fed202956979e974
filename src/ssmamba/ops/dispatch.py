"""`selective_scan` and `directional_scan`: one entry point each, several backends, chosen per call.

``auto``: CUDA tensors -> ``cuda``; CPU tensors -> ``cpu`` (the fused kernel) if it builds, else ``ref`` with a
one-time ScanFallbackWarning. ``SSMAMBA_SCAN_BACKEND=ref|cpu|cuda`` forces what ``auto`` picks; an explicit
``backend=`` argument always wins and never falls back silently.
"""

from __future__ import annotations

import enum
import os

import torch

from ssmamba.ops import scan_cpu, scan_cuda
from ssmamba.ops.contract import check_scan_inputs
from ssmamba.ops.directional import check_directional_inputs, directional_scan_ref
from ssmamba.ops.fallback import warn_once
from ssmamba.ops.scan_cpu import ExtensionBuildError, directional_scan_cpu, selective_scan_cpu
from ssmamba.ops.scan_cuda import directional_scan_cuda, selective_scan_cuda
from ssmamba.ops.scan_ref import selective_scan_ref

BACKEND_ENV = "SSMAMBA_SCAN_BACKEND"


class Backend(enum.Enum):
    AUTO = "auto"
    REF = "ref"
    CPU = "cpu"
    CUDA = "cuda"

    @classmethod
    def parse(cls, value: str | Backend, source: str = "backend") -> Backend:
        if isinstance(value, Backend):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(repr(b.value) for b in cls)
            raise ValueError(f"selective_scan: unknown {source} {value!r}; choose one of {names}") from None


_IMPLEMENTATIONS = {Backend.REF: selective_scan_ref, Backend.CPU: selective_scan_cpu, Backend.CUDA: selective_scan_cuda}
_DIRECTIONAL = {
    Backend.REF: directional_scan_ref, Backend.CPU: directional_scan_cpu, Backend.CUDA: directional_scan_cuda
}


def _forced_backend() -> Backend | None:
    value = os.environ.get(BACKEND_ENV, "")
    if not value.strip():
        return None
    forced = Backend.parse(value, source=f"{BACKEND_ENV} value")
    return None if forced is Backend.AUTO else forced


def choose_backend(device: torch.device | str) -> tuple[str, str]:
    """(name of the backend `auto` picks for tensors on `device`, why). Compiles nothing."""
    device = torch.device(device)
    forced = _forced_backend()
    if forced is not None:
        return forced.value, f"forced by {BACKEND_ENV}={forced.value}"
    if device.type == "cuda":
        return Backend.CUDA.value, scan_cuda.status()[1]
    if device.type == "cpu":
        available, why = scan_cpu.extension_status()
        if available:
            return Backend.CPU.value, why
        return Backend.REF.value, f"CPU kernel unavailable: {why}"
    return Backend.REF.value, f"no fused kernel for {device.type} tensors"


def backend_report() -> list[tuple[str, bool, str]]:
    """(name, available, reason) for "ref", "cpu", "cuda". Compiles nothing."""
    return [
        (Backend.REF.value, True, "PyTorch loop with autograd (always available; slow, memory O(batch·dim·L·N))"),
        (Backend.CPU.value, *scan_cpu.extension_status()),
        (Backend.CUDA.value, *scan_cuda.status()),
    ]


def selective_scan(
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
    backend: str | Backend = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan, ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t·h_t + D u_t``, ``y *= silu(z)``.

    Args:
        u, delta: (batch, dim, L). A: (dim, N), real.
        B, C: (batch, N, L), or grouped (batch, G, N, L) with dim % G == 0 (channel d uses group d // (dim / G)).
        D, delta_bias: (dim,) or None. z: (batch, dim, L) or None.
        delta_softplus: Δ = softplus(delta + delta_bias) instead of delta + delta_bias.
        return_last_state: also return the state after the last step.
        backend: "auto", "ref", "cpu" or "cuda".
    Returns:
        out (batch, dim, L) in u's dtype, or (out, last_state (batch, dim, N)) with `return_last_state`.
    """
    requested = Backend.parse(backend)
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return _run(_IMPLEMENTATIONS, "selective_scan", requested, u.device, args, {})


def directional_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    directions,
    height: int,
    width: int,
    backend: str | Backend = "auto",
) -> torch.Tensor:
    """K selective scans of a ``height x width`` token grid, each in its direction's order, summed row-major.

    Args:
        u: (batch, E, H·W) row-major tokens, shared by the directions. delta: (batch, K, E, H·W).
        A: (K, E, N), or (K, E, 1) for one decay per channel (scalar A).
        B, C: (batch, K·M, N, H·W); direction k uses groups k·M .. k·M + M - 1.
        D, delta_bias: (K, E) or None. delta_softplus: Δ = softplus(delta + delta_bias).
        directions: K `ScanDirection` values (or their names); step t of direction k reads token
            ``scan_order(directions[k], height, width)[t]``.
        backend: "auto", "ref", "cpu" or "cuda", chosen like `selective_scan`'s.
    Returns:
        (batch, E, H·W) in u's dtype: Σ_k of direction k's output at the token it read. The CPU kernel reads
        every input in place (no reordered copies) and keeps u's memory layout.
    """
    requested = Backend.parse(backend)
    check_directional_inputs(u, delta, A, B, C, D, delta_bias, directions, height, width)
    kwargs = dict(directions=tuple(directions), height=height, width=width)
    return _run(_DIRECTIONAL, "directional_scan", requested, u.device,
                (u, delta, A, B, C, D, delta_bias, delta_softplus), kwargs)  # fmt: skip


def _run(implementations: dict, name: str, requested: Backend, device: torch.device, args: tuple, kwargs: dict):
    """`requested`, or for `auto` the environment's or the device's backend; only `auto` falls back (to ref, with
    a one-time warning) when the CPU kernel cannot be built."""
    if requested is Backend.AUTO:
        forced = _forced_backend()
        if forced is not None:  # forced like an explicit argument: no fallback
            return implementations[forced](*args, **kwargs)
        requested = _auto_backend(device)
        if requested is Backend.CPU:
            try:
                return implementations[Backend.CPU](*args, **kwargs)
            except ExtensionBuildError as error:
                warn_once(
                    "selective_scan:cpu",
                    f"{name}: the fused CPU kernel is unavailable, using the slow reference scan instead "
                    f"(set {BACKEND_ENV}=ref to choose it explicitly). Reason: {error}",
                )
                requested = Backend.REF
    return implementations[requested](*args, **kwargs)


def _auto_backend(device: torch.device) -> Backend:
    if device.type == "cuda":
        return Backend.CUDA
    if device.type == "cpu":
        return Backend.CPU  # tried even when a status check says no: the fallback warning then shows the real error
    warn_once(f"selective_scan:{device.type}", f"selective_scan: no fused kernel for {device.type} tensors; using "
              "the slow reference scan")  # fmt: skip
    return Backend.REF
