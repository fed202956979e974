"""AdamW parameter groups (weight decay, layer-wise LR decay) and the warm-up + cosine schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ssmamba.models import create_model
from ssmamba.ssl.mamim import MAMIM
from ssmamba.train.optim import adamw, layer_ids, param_groups, warmup_cosine


def _settings(model, groups):
    """name -> (weight_decay, lr) of the group each parameter landed in; every parameter exactly once."""
    where = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in where, "a parameter is in two groups"
            where[id(param)] = (group["weight_decay"], group["lr"])
    return {name: where[id(p)] for name, p in model.named_parameters()}


def test_no_decay_for_ssm_dynamics_layer_scales_norms_and_biases():
    model = create_model("ssmamba_test", num_classes=3, conv_block="inverted")  # the block with a layer scale
    settings = _settings(model, param_groups(model, lr=1e-3, weight_decay=0.05))
    decayed = {n for n, (wd, _) in settings.items() if wd > 0}
    assert all(wd in (0.0, 0.05) for wd, _ in settings.values())
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        should_decay = param.ndim > 1 and leaf not in {"A_log", "gamma"}
        assert (name in decayed) == should_decay, name
    # the 2-D/3-D ones that are not decayed, by name, and a few that are
    assert "stages.2.blocks.0.mixer.scans.0.A_log" not in decayed and "stages.0.blocks.0.gamma" not in decayed
    assert {"stages.2.blocks.0.mixer.scans.0.x_proj_weight", "head.weight", "stem.0.weight"} <= decayed


def test_mamim_decays_neither_the_encoder_dynamics_nor_the_mask_token():
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0, conv_block="inverted"), patch_size=16)
    settings = _settings(mamim, param_groups(mamim, lr=1e-3, weight_decay=0.05))
    assert settings["mask_token"][0] == 0.0
    assert settings["encoder.stages.3.blocks.0.mixer.scans.1.A_log"][0] == 0.0
    assert settings["encoder.stages.1.blocks.0.gamma"][0] == 0.0
    assert settings["encoder.stages.3.blocks.0.mixer.in_proj.weight"][0] == 0.05


def test_layer_decay_scales_by_depth_and_keeps_downsampling_norms_with_their_stage():
    model = create_model("ssmamba_test", num_classes=3, depths=(1, 1, 2, 1))
    ids, n = layer_ids(model)
    assert n == 1 + 5 + 1  # stem, five blocks (the final norm joins the last), head
    settings = _settings(model, param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.5))
    lr = {name: value for name, (_, value) in settings.items()}
    assert lr["stem.0.weight"] == pytest.approx(0.5 ** (n - 1))
    assert lr["head.weight"] == 1.0
    assert lr["stages.2.down_norm.weight"] == lr["stages.2.downsample.weight"] == lr["stages.2.blocks.0.gamma1"]
    assert lr["stages.2.blocks.1.gamma1"] == pytest.approx(2 * lr["stages.2.blocks.0.gamma1"])
    assert lr["norm.weight"] == lr["stages.3.blocks.0.gamma1"] == 0.5
    # deeper never trains slower
    order = [lr[name] for name, _ in model.named_parameters()]
    assert order == sorted(order)


def test_extra_modules_train_at_the_full_rate():
    model = create_model("ssmamba_test", num_classes=0)
    decoder = torch.nn.Linear(4, 4)
    groups = param_groups(model, lr=2.0, weight_decay=0.1, layer_decay=0.5, extra_modules={"decoder": decoder})
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert where[id(decoder.weight)] == (2.0, 0.1) and where[id(decoder.bias)] == (2.0, 0.0)


def test_frozen_parameters_are_left_out():
    model = create_model("ssmamba_test", num_classes=3)
    model.stem.requires_grad_(False)
    params = {id(p) for g in param_groups(model, lr=1.0, weight_decay=0.1) for p in g["params"]}
    assert id(model.stem[0].weight) not in params and id(model.head.weight) in params


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    rates = []
    for _ in range(15):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0)
    assert rates[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert rates[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))


def test_adamw_is_fused_on_cpu_and_takes_the_same_steps_as_the_loop():
    """The fused kernel (one call for all tensors) against torch's per-tensor loop, fed the same gradients: the same
    weights after three steps with weight decay and layer-decayed groups, to float32 rounding."""
    torch.manual_seed(0)
    model = create_model("ssmamba_test", num_classes=3)
    reference = copy.deepcopy(model)
    fused = adamw(param_groups(model, 1e-2, 0.05, layer_decay=0.8), 1e-2, "cpu", betas=(0.9, 0.95))
    loop = torch.optim.AdamW(param_groups(reference, 1e-2, 0.05, layer_decay=0.8), lr=1e-2, betas=(0.9, 0.95),
                             foreach=False)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for _ in range(3):
        for a, b in zip(model.parameters(), reference.parameters()):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert fused.state_dict()["state"].keys() == loop.state_dict()["state"].keys()  # checkpoints interchange
