"""Hilbert-curve ordering of tiles: a 1D sequence in which neighbours on the slide stay close.

A sequence model over tiles sees only 1D neighbours. Row-major order puts vertically adjacent tiles a whole row
apart; a Hilbert curve keeps any two consecutive tiles adjacent on the slide and keeps compact regions in compact
stretches of the sequence, which is what a scan with decaying memory needs (MambaBack, Chai et al. 2026).
"""

from __future__ import annotations

import torch


def grid_indices(coords: torch.Tensor) -> torch.Tensor:
    """(N, 2) pixel coordinates of tiles on a regular grid -> (N, 2) int64 column/row indices from 0.

    The grid step along each axis is the smallest positive gap between distinct coordinates, so sparse tissue
    (gaps of several tiles) keeps its true spacing. Off-grid coordinates still map monotonically to cells.
    """
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got {tuple(coords.shape)}")
    coords = coords.to(torch.int64)
    columns = []
    for axis in range(2):
        values = coords[:, axis]
        distinct = torch.unique(values)  # sorted
        gaps = torch.diff(distinct)
        step = int(gaps.min()) if len(gaps) else 1
        columns.append(torch.div(values - distinct[0] + step // 2, max(step, 1), rounding_mode="floor"))
    return torch.stack(columns, dim=1)


def hilbert_index(x: torch.Tensor, y: torch.Tensor, order: int) -> torch.Tensor:
    """Distance along the Hilbert curve of a 2**order x 2**order grid for integer cells (x, y), vectorised.

    The classic bit-by-bit construction: at each scale decide the quadrant, add the cells of the quadrants the
    curve has already visited, and rotate/reflect so the sub-curve starts where the parent curve enters it.
    """
    x, y = x.to(torch.int64).clone(), y.to(torch.int64).clone()
    side = 1 << order
    if (x < 0).any() or (y < 0).any() or (x >= side).any() or (y >= side).any():
        raise ValueError(f"cells must lie in [0, {side}) for order {order}")
    distance = torch.zeros_like(x)
    scale = side >> 1
    while scale > 0:
        in_right = (x & scale) > 0
        in_top = (y & scale) > 0
        distance += scale * scale * ((3 * in_right.long()) ^ in_top.long())
        # rotate the lower quadrants so the sub-curve is traversed in the parent's orientation
        flip = (~in_top) & in_right
        x = torch.where(flip, side - 1 - x, x)
        y = torch.where(flip, side - 1 - y, y)
        swap = ~in_top
        x, y = torch.where(swap, y, x), torch.where(swap, x, y)
        scale >>= 1
    return distance


def hilbert_order(coords: torch.Tensor) -> torch.Tensor:
    """Permutation (N,) that sorts tiles with (N, 2) coordinates along a Hilbert curve over their grid."""
    if len(coords) <= 1:
        return torch.arange(len(coords), device=coords.device)
    cells = grid_indices(coords)
    extent = int(cells.max()) + 1
    order = max(1, (extent - 1).bit_length())
    distance = hilbert_index(cells[:, 0], cells[:, 1], order)
    return torch.argsort(distance, stable=True)
