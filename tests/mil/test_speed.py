"""What makes small-bag MIL training cheaper on a CPU: one convolution in PPEG, a fused optimiser, and a thread
setting that holds (benchmarks/mil_speed.py measures them)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ssmamba.mil import create_mil_head
from ssmamba.mil.bags import BagDataset
from ssmamba.mil.inference import torch_threads
from ssmamba.mil.training import MILTrainConfig, head_optimizer, train_head
from ssmamba.mil.transmil import PPEG
from ssmamba.train.optim import param_groups


def test_ppeg_single_convolution_equals_identity_plus_three_convolutions():
    torch.manual_seed(0)
    ppeg = PPEG(8)
    tokens = torch.randn(2, 1 + 25, 8, requires_grad=True)
    merged = ppeg(tokens, 5)
    grid = tokens[:, 1:].transpose(1, 2).reshape(2, 8, 5, 5)
    reference = grid + sum(conv(grid) for conv in ppeg.convs)
    torch.testing.assert_close(merged[:, 1:], reference.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged[:, :1], tokens[:, :1])
    (grad_merged,) = torch.autograd.grad(merged[:, 1:].square().sum(), ppeg.convs[1].weight)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), ppeg.convs[1].weight)
    torch.testing.assert_close(grad_merged, grad_reference, rtol=1e-4, atol=1e-4)
    assert "identity" not in ppeg.state_dict()  # checkpoints keep the three convolutions' parameters


def test_threads_setting_holds_during_training_and_is_restored(bag_folder):
    from ssmamba.mil.bags import read_bag_table

    dataset = BagDataset(read_bag_table(*bag_folder).records[:4])
    torch.set_num_threads(2)
    seen = []
    head = create_mil_head("abmil", 8, 2, hidden_dim=16)
    original = head.forward
    head.forward = lambda *a, **k: (seen.append(torch.get_num_threads()), original(*a, **k))[1]
    train_head(head, dataset, MILTrainConfig(epochs=1, threads=1), progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    train_head(head, dataset, MILTrainConfig(epochs=1), progress=False)  # None: torch's setting
    assert set(seen[len(seen) // 2:]) == {2}
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with torch_threads(0):
            pass


def test_fused_optimiser_takes_the_same_steps_as_the_plain_one():
    torch.manual_seed(0)
    heads = [create_mil_head("abmil", 8, 2, hidden_dim=16, dropout=0.0) for _ in range(2)]
    heads[1].load_state_dict(heads[0].state_dict())
    fused = head_optimizer(heads[0], MILTrainConfig(lr=1e-2), torch.device("cpu"))
    plain = torch.optim.AdamW(param_groups(heads[1], 1e-2, MILTrainConfig().weight_decay), lr=1e-2)
    assert fused.defaults["fused"]
    features = torch.randn(30, 8)
    for _ in range(5):
        for head, optimizer in ((heads[0], fused), (heads[1], plain)):
            loss = F.cross_entropy(head(features), torch.tensor([1]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # parameters (not the attention-score bias: softmax ignores it, its gradient is rounding noise that Adam
    # normalises to full-size steps either way) and outputs agree
    for (name, a), b in zip(heads[0].named_parameters(), heads[1].parameters()):
        if name != "pool.score.bias":
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    probe = torch.randn(12, 8)
    torch.testing.assert_close(heads[0](probe), heads[1](probe), rtol=1e-4, atol=1e-5)
