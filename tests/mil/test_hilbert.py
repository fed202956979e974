from __future__ import annotations

import torch

from ssmamba.mil.hilbert import grid_indices, hilbert_index, hilbert_order


def test_curve_visits_every_cell_once_and_moves_one_cell_at_a_time():
    side = 16
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    distance = hilbert_index(xs.ravel(), ys.ravel(), order=4)
    assert sorted(distance.tolist()) == list(range(side * side))
    cells = torch.stack([xs.ravel(), ys.ravel()], 1)[torch.argsort(distance)]
    assert ((cells[1:] - cells[:-1]).abs().sum(1) == 1).all()


def test_order_from_pixel_coordinates_keeps_neighbours_close():
    side, step = 32, 448
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    coords = torch.stack([xs.ravel(), ys.ravel()], 1) * step + torch.tensor([1000, 37])
    order = hilbert_order(coords[torch.randperm(len(coords))])
    assert sorted(order.tolist()) == list(range(side * side))
    shuffled = coords[torch.randperm(len(coords))]
    path = shuffled[hilbert_order(shuffled)] // step
    hilbert_jump = (path[1:] - path[:-1]).abs().sum(1).float().mean()
    row_major_jump = 1 + 2 * (side - 1) / (side * side - 1)  # one row wrap per row
    assert hilbert_jump == 1.0 and hilbert_jump < row_major_jump


def test_grid_indices_keep_gaps_of_sparse_tissue():
    coords = torch.tensor([[100, 50], [324, 50], [1220, 274]])  # step 224 with a 3-tile gap
    assert grid_indices(coords).tolist() == [[0, 0], [1, 0], [5, 1]]


def test_single_tile_and_off_grid_coordinates():
    assert hilbert_order(torch.tensor([[5, 5]])).tolist() == [0]
    jittered = torch.tensor([[0, 0], [223, 1], [449, 0], [0, 225]])  # rounding jitter of a float step
    assert sorted(hilbert_order(jittered).tolist()) == [0, 1, 2, 3]
