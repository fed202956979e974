"""Directional scans of a 2D token grid: K selective scans, each reading the grid in its own order, summed.

    out = directional_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False,
                           directions=("row", "column"), height=H, width=W)

    u:              (batch, E, H·W)      row-major tokens, shared by all K directions
    delta:          (batch, K, E, H·W)   row-major; direction k's Δ
    A:              (K, E, N), or (K, E, 1): one decay per channel shared by its N states (Mamba-2's scalar A)
    D, delta_bias:  (K, E)
    B, C:           (batch, K·M, N, H·W) row-major; direction k uses groups k·M .. k·M + M - 1, channel e of
                                         direction k group k·M + e // (E / M)
    out:            (batch, E, H·W)      Σ_k scan_k(tokens in direction k's order), put back in row-major order

Step ``t`` of direction ``k`` reads token ``scan_order(directions[k], H, W)[t]``. The fused CPU kernel reads every
tensor in place through that order and its strides (nothing flipped, transposed or stacked); the reference here
gathers each direction's sequence explicitly, runs a plain selective scan and scatters the result back.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache, wraps
from typing import Callable, Sequence

import torch

from ssmamba.ops.contract import compute_dtype
from ssmamba.ops.scan_ref import selective_scan_ref

__all__ = ["ScanDirection", "scan_order", "direction_orders", "check_directional_inputs",
           "directional_scan_reordered", "directional_scan_ref", "index_cache"]


class ScanDirection(str, Enum):
    """The order in which a 2D grid of tokens is read as a sequence."""

    ROW = "row"  # left to right, then top to bottom (raster)
    ROW_REVERSE = "row_reverse"
    COLUMN = "column"  # top to bottom, then left to right
    COLUMN_REVERSE = "column_reverse"
    DIAGONAL = "diagonal"  # along anti-diagonals i + j = const, from the top-left corner
    DIAGONAL_REVERSE = "diagonal_reverse"


def index_cache(function: Callable) -> Callable:
    """``lru_cache`` for a function that builds index tensors, which it runs with inference mode off: a tensor first
    built inside ``torch.inference_mode`` (tile embedding does that) and cached would make every later training step
    that saves it for backward fail ("Inference tensors cannot be saved for backward")."""

    @lru_cache(maxsize=256)
    @wraps(function)
    def cached(*args):
        with torch.inference_mode(False):
            return function(*args)

    return cached


@index_cache
def _scan_order_cpu(direction: ScanDirection, height: int, width: int) -> torch.Tensor:
    index = torch.arange(height * width).view(height, width)
    if direction in (ScanDirection.ROW, ScanDirection.ROW_REVERSE):
        order = index.flatten()
    elif direction in (ScanDirection.COLUMN, ScanDirection.COLUMN_REVERSE):
        order = index.t().flatten()
    else:  # diagonals: sort by (i + j, i); stable, so ties keep raster order
        i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        order = index.flatten()[torch.argsort((i + j).flatten() * height + i.flatten())]
    if direction.value.endswith("_reverse"):
        order = order.flip(0)
    return order


def scan_order(direction: ScanDirection | str, height: int, width: int, device: torch.device | None = None):
    """Sequence order of an ``height x width`` grid: position ``t`` of the scan reads row-major token ``order[t]``.

    Returns a LongTensor of shape ``(height * width,)``.
    """
    order = _scan_order_cpu(ScanDirection(direction), height, width)
    return order if device is None else order.to(device)


@index_cache
def _direction_orders_cpu(directions: tuple[ScanDirection, ...], height: int, width: int) -> torch.Tensor:
    return torch.stack([_scan_order_cpu(d, height, width) for d in directions]).contiguous()


@index_cache
def _direction_orders_on(directions: tuple[ScanDirection, ...], height: int, width: int,
                         device: torch.device) -> torch.Tensor:  # fmt: skip
    return _direction_orders_cpu(directions, height, width).to(device)


def direction_orders(directions: Sequence[ScanDirection | str], height: int, width: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``(K, height * width)`` LongTensor: row ``k`` is :func:`scan_order` of ``directions[k]``. Cached per device,
    so a GPU scan does not copy its index table from the host at every call."""
    key = tuple(ScanDirection(d) for d in directions)
    if device is None:
        return _direction_orders_cpu(key, height, width)
    return _direction_orders_on(key, height, width, torch.device(device))


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_directional_inputs(u, delta, A, B, C, D, delta_bias, directions, height: int, width: int) -> int:
    """Validate a directional scan's inputs (ValueError/TypeError naming the argument); return M, the groups per
    direction."""
    for name, value in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                        ("delta_bias", delta_bias)):  # fmt: skip
        if value is not None and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            raise TypeError(f"directional_scan: `{name}` must be a floating-point torch.Tensor")
        if value is not None and value.device != u.device:
            raise ValueError(f"directional_scan: `{name}` is on {value.device} but `u` is on {u.device}")
    k = len(directions)
    if k < 1:
        raise ValueError("directional_scan: `directions` must name at least one direction")
    for d in directions:
        ScanDirection(d)  # ValueError naming the bad value
    if u.dim() != 3 or u.shape[2] != height * width:
        raise ValueError(f"directional_scan: `u` must have shape (batch, E, height·width) with height·width = "
                         f"{height * width}, got {_fmt(u.shape)}")  # fmt: skip
    batch, channels, length = u.shape
    if tuple(delta.shape) != (batch, k, channels, length):
        raise ValueError(f"directional_scan: `delta` must have shape (batch, K, E, L) = "
                         f"{_fmt((batch, k, channels, length))}, got {_fmt(delta.shape)}")  # fmt: skip
    if B.dim() != 4 or B.shape[1] % k or channels % max(1, B.shape[1] // k):
        raise ValueError(f"directional_scan: `B` must have shape (batch, K·M, N, L) with M dividing E = {channels}, "
                         f"got {_fmt(B.shape)}")  # fmt: skip
    state = B.shape[2]
    if A.dim() != 3 or tuple(A.shape[:2]) != (k, channels) or A.shape[2] not in (1, state):
        raise ValueError(f"directional_scan: `A` must have shape (K, E, N) = ({k}, {channels}, {state}) or "
                         f"(K, E, 1), got {_fmt(A.shape)}")  # fmt: skip
    expected = (batch, B.shape[1], state, length)
    for name, value in (("B", B), ("C", C)):
        if tuple(value.shape) != expected:
            raise ValueError(f"directional_scan: `{name}` must have shape {_fmt(expected)}, got {_fmt(value.shape)}")
    for name, value in (("D", D), ("delta_bias", delta_bias)):
        if value is not None and tuple(value.shape) != (k, channels):
            raise ValueError(f"directional_scan: `{name}` must have shape (K, E) = ({k}, {channels}), got "
                             f"{_fmt(value.shape)}")  # fmt: skip
    return B.shape[1] // k


def directional_scan_reordered(
    scan: Callable, u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = False, *,
    directions: Sequence[ScanDirection | str], height: int, width: int,
) -> torch.Tensor:  # fmt: skip
    """A directional scan built from a plain selective scan `scan` (same signature as `selective_scan_ref`): each
    direction's sequence gathered explicitly, all K run as one grouped scan, scattered back and summed in the
    compute dtype."""
    groups = check_directional_inputs(u, delta, A, B, C, D, delta_bias, directions, height, width)
    batch, channels, length = u.shape
    k, state, dtype = len(directions), B.shape[2], compute_dtype(u)
    orders = direction_orders(directions, height, width, u.device)  # (K, L)
    u_seq = u.to(dtype)[:, :, orders].transpose(1, 2)  # (batch, K, E, L)
    delta_seq = delta.to(dtype).gather(-1, orders[None, :, None, :].expand(batch, k, channels, length))
    grouped = (batch, k, groups, state, length)
    index = orders[None, :, None, None, :].expand(grouped)
    B_seq = B.to(dtype).reshape(grouped).gather(-1, index).reshape(batch, k * groups, state, length)
    C_seq = C.to(dtype).reshape(grouped).gather(-1, index).reshape(batch, k * groups, state, length)
    y = scan(
        u_seq.reshape(batch, k * channels, length), delta_seq.reshape(batch, k * channels, length),
        A.to(dtype).expand(k, channels, state).reshape(k * channels, state), B_seq, C_seq,
        None if D is None else D.to(dtype).reshape(-1), None,
        None if delta_bias is None else delta_bias.to(dtype).reshape(-1), delta_softplus,
    ).view(batch, k, channels, length)  # fmt: skip
    inverse = torch.argsort(orders, dim=1)
    y = y.gather(-1, inverse[None, :, None, :].expand(batch, k, channels, length))
    return y.sum(1).to(u.dtype)


def directional_scan_ref(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = False, *,
                         directions, height: int, width: int) -> torch.Tensor:  # fmt: skip
    """Reference directional scan: explicit reordering around `selective_scan_ref`; differentiable by autograd."""
    return directional_scan_reordered(selective_scan_ref, u, delta, A, B, C, D, delta_bias, delta_softplus,
                                      directions=directions, height=height, width=width)  # fmt: skip
