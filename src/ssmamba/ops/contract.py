"""The selective-scan shape contract (mamba_ssm's), checked once with messages that name the argument.

    u, delta, z:      (batch, dim, L)
    A:                (dim, N)            real
    B, C:             (batch, N, L)  or grouped (batch, G, N, L) with dim % G == 0; channel d uses group d // (dim / G)
    D, delta_bias:    (dim,)
    last_state:       (batch, dim, N)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class ScanShape:
    batch: int
    dim: int
    length: int
    state: int
    groups: int


def _fmt(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_tensor(name: str, value: object, like: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"selective_scan: `{name}` must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"selective_scan: `{name}` must be a real floating-point tensor (float32, float64, float16 or bfloat16), "
            f"got {value.dtype}"
        )
    if like is not None and value.device != like.device:
        raise ValueError(
            f"selective_scan: `{name}` is on {value.device} but `u` is on {like.device}; all inputs must share a device"
        )
    return value


def _check_shape(name: str, value: torch.Tensor, expected: tuple[int, ...], meaning: str) -> None:
    if tuple(value.shape) != expected:
        raise ValueError(
            f"selective_scan: `{name}` must have shape {meaning} = {_fmt(expected)}, got {_fmt(value.shape)}"
        )


def check_scan_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
) -> ScanShape:
    """Validate the inputs of a selective scan and return its sizes; raise TypeError/ValueError naming the argument."""
    u = _check_tensor("u", u, None)
    if u.dim() != 3:
        raise ValueError(f"selective_scan: `u` must have shape (batch, dim, length), got {_fmt(u.shape)}")
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError(f"selective_scan: sequence length must be at least 1, `u` has shape {_fmt(u.shape)}")

    _check_shape("delta", _check_tensor("delta", delta, u), (batch, dim, length), "(batch, dim, length) like `u`")
    A = _check_tensor("A", A, u)
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: `A` must have shape (dim, N) = ({dim}, N), got {_fmt(A.shape)}")
    state = A.shape[1]

    B = _check_tensor("B", B, u)
    if B.dim() == 3:
        groups, expected_B, meaning = 1, (batch, state, length), "(batch, N, length)"
    elif B.dim() == 4:
        groups, expected_B, meaning = B.shape[1], (batch, B.shape[1], state, length), "(batch, G, N, length)"
        if groups < 1 or dim % groups:
            raise ValueError(
                f"selective_scan: grouped `B` has G = {groups} groups, which must divide dim = {dim}; "
                f"got {_fmt(B.shape)}"
            )
    else:
        raise ValueError(
            f"selective_scan: `B` must have shape (batch, N, length) = {_fmt((batch, state, length))} or "
            f"(batch, G, N, length), got {_fmt(B.shape)}"
        )
    _check_shape("B", B, expected_B, meaning)
    _check_shape("C", _check_tensor("C", C, u), expected_B, meaning + " like `B`")

    for name, value in (("D", D), ("delta_bias", delta_bias)):
        if value is not None:
            _check_shape(name, _check_tensor(name, value, u), (dim,), "(dim,)")
    if z is not None:
        _check_shape("z", _check_tensor("z", z, u), (batch, dim, length), "(batch, dim, length) like `u`")
    return ScanShape(batch=batch, dim=dim, length=length, state=state, groups=groups)


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """Scans accumulate over long sequences: float64 stays float64, everything else computes in float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def as_grouped(B: torch.Tensor) -> torch.Tensor:
    """(batch, N, L) -> (batch, 1, N, L); grouped (batch, G, N, L) is returned as is."""
    return B.unsqueeze(1) if B.dim() == 3 else B
