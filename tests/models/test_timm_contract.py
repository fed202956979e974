"""The timm contract, tried as a timm user would: every call asserts values, not only that it runs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from timm.models import FeatureInfo, group_parameters
from timm.optim import create_optimizer_v2

from ssmamba.data.transforms import eval_transform
from ssmamba.models import SSMamba, create_model, save_pretrained

GLOBAL_POOLS = ["avg", "max", "avgmax", "catavgmax", "fast", ""]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("ssmamba_test", num_classes=3).eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 48)


def _stage_outputs(model: SSMamba, x: torch.Tensor) -> list[torch.Tensor]:
    out, y = [], model.forward_stem(x)
    for stage in model.stages:
        y = stage(y)
        out.append(y)
    return out


@torch.no_grad()
def test_intermediates_equal_the_stage_outputs(model, x):
    stages = _stage_outputs(model, x)
    final, intermediates = model.forward_intermediates(x)
    assert len(intermediates) == 4
    for got, want in zip(intermediates, stages):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
    # norm=True normalises the last stage only (the one the final norm belongs to); NHWC is the same maps permuted
    normed = model.forward_intermediates(x, indices=[2, -1], norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[0], stages[2], rtol=0, atol=0)
    torch.testing.assert_close(normed[1], model.forward_features(x), rtol=0, atol=0)
    nhwc = model.forward_intermediates(x, indices=2, output_fmt="NHWC", intermediates_only=True)
    for got, want in zip(nhwc, stages[2:]):
        torch.testing.assert_close(got, want.permute(0, 2, 3, 1), rtol=0, atol=0)


@torch.no_grad()
def test_stop_early_runs_no_later_stage(model, x):
    stages = _stage_outputs(model, x)
    ran = []
    hooks = [stage.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, stage in enumerate(model.stages)]
    try:
        final, intermediates = model.forward_intermediates(x, indices=[1], stop_early=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0, 1]
    torch.testing.assert_close(intermediates[0], stages[1], rtol=0, atol=0)
    torch.testing.assert_close(final, stages[1], rtol=0, atol=0)  # unnormalised: the norm belongs to stage 4
    with pytest.raises(AssertionError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


@pytest.mark.parametrize("global_pool", GLOBAL_POOLS, ids=lambda p: p or "none")
@torch.no_grad()
def test_every_global_pool_in_create_model_and_reset_classifier(global_pool, x):
    torch.manual_seed(0)
    model = timm.create_model("ssmamba_test", num_classes=3, global_pool=global_pool).eval()
    features = model.forward_features(x)  # (2, 64, 2, 2)
    pooled = {"avg": features.mean((2, 3)), "fast": features.mean((2, 3)), "max": features.amax((2, 3)),
              "avgmax": 0.5 * (features.mean((2, 3)) + features.amax((2, 3))),
              "catavgmax": torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1), "": features}[global_pool]
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), pooled)
    if global_pool:
        assert model.head_hidden_size == pooled.shape[1]
        torch.testing.assert_close(model(x), pooled @ model.head.weight.t() + model.head.bias)
    else:  # no pooling: the head classifies every location, NCHW
        expected = torch.einsum("bchw,kc->bkhw", features, model.head.weight) + model.head.bias.view(1, 3, 1, 1)
        torch.testing.assert_close(model(x), expected)
    model.reset_classifier(0, global_pool)
    torch.testing.assert_close(model(x), pooled)
    model.reset_classifier(5)  # keeps the pooling
    assert model(x).shape == ((2, 5) if global_pool else (2, 5, 2, 2))


@torch.no_grad()
def test_features_only_list_and_getter_with_integer_out_indices(model, x):
    stages = _stage_outputs(model, x)
    for feature_cls in ("list", "getter"):
        torch.manual_seed(0)  # the same weights as the `model` fixture
        features = timm.create_model("ssmamba_test", features_only=True, feature_cls=feature_cls, out_indices=2)
        maps = features.eval()(x)
        assert len(maps) == 2, feature_cls
        for got, want in zip(maps, stages[2:]):
            torch.testing.assert_close(got, want, msg=feature_cls)
        info = features.feature_info
        assert isinstance(info, FeatureInfo)
        assert info.module_name() == ["stages.2", "stages.3"]
        assert info.channels() == [32, 64] and info.reduction() == [16, 32]
        assert info.get_dicts(keys=["num_chs", "reduction"]) == [{"num_chs": 32, "reduction": 16},
                                                                {"num_chs": 64, "reduction": 32}]
    # the getter prunes what it does not need: no stage after the last tap, no norm, no head
    getter = timm.create_model("ssmamba_test", features_only=True, feature_cls="getter", out_indices=(0, 1))
    assert len(getter.model.stages) == 2 and isinstance(getter.model.norm, torch.nn.Identity)


@torch.no_grad()
def test_features_only_from_a_checkpoint_keeps_its_weights(tmp_path, model, x):
    save_pretrained(model, tmp_path / "ckpt", pretrained_cfg={"mpp": 0.5})
    stages = _stage_outputs(model, x)
    for feature_cls in ("list", "getter"):
        features = create_model(checkpoint=tmp_path / "ckpt", features_only=True, feature_cls=feature_cls,
                                out_indices=(1, 3)).eval()
        for got, want in zip(features(x), [stages[1], stages[3]]):
            torch.testing.assert_close(got, want)
        assert features.pretrained_cfg["mpp"] == 0.5 and features.feature_info.channels() == [16, 64]


def test_prune_intermediate_layers(x):
    model = create_model("ssmamba_test", num_classes=3).eval()
    with torch.no_grad():
        expected = _stage_outputs(model, x)[1]
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.stages) == 2 and model.num_features == 16 and model.num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(model.forward_intermediates(x, intermediates_only=True)[1], expected)
        torch.testing.assert_close(model(x), expected)  # timm's convention: no head, no pooling


def test_default_cfg_and_pretrained_cfg(no_network):
    model = timm.create_model("ssmamba_test")
    assert model.default_cfg is model.pretrained_cfg
    cfg = model.pretrained_cfg
    assert (cfg["interpolation"], cfg["crop_pct"], cfg["crop_mode"]) == ("bilinear", 1.0, "center")
    assert cfg["first_conv"] == "stem.0" and cfg["classifier"] == "head" and cfg["num_classes"] == 1000
    ours = create_model("ssmamba_test")
    assert ours.default_cfg is ours.pretrained_cfg and ours.pretrained_cfg["interpolation"] == "bilinear"
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("ssmamba_test", pretrained=True)


@pytest.mark.parametrize("size", [224, 96])
def test_timm_transform_from_pretrained_cfg_equals_ours(tmp_path, size):
    """timm.data.create_transform(**resolve_model_data_config(m)) reproduces ssmamba's eval preprocessing, for the
    default config and for a checkpoint trained at another size with its own statistics."""
    model = create_model("ssmamba_test")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if size != 224:
        mean, std = [0.7, 0.55, 0.72], [0.15, 0.2, 0.12]
        save_pretrained(model, tmp_path / "c", pretrained_cfg={"input_size": [3, size, size], "mean": mean,
                                                                "std": std})
        model = create_model(checkpoint=tmp_path / "c")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (301, 257, 3), dtype=np.uint8))  # not square, not the size
    theirs = create_transform(**resolve_model_data_config(model))(image)
    ours = eval_transform(size, mean, std)(image)
    assert theirs.shape == ours.shape == (3, size, size)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-6)


@pytest.mark.parametrize("conv_block", ["dense", "inverted"])
def test_no_weight_decay_names_full_parameters_and_timm_optimizer_excludes_them(conv_block):
    model = create_model("ssmamba_test", num_classes=3, attn_blocks=1, depths=(1, 1, 2, 2), conv_block=conv_block)
    names = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert skip <= set(names)
    one_d = {n for n, p in names.items() if p.ndim <= 1}
    a_log = {n for n in names if n.endswith(".A_log")}
    d = {n for n in names if n.endswith(".D")}
    gamma = {n for n in names if n.endswith(".gamma")}  # the inverted conv block's layer scale, (C, 1, 1)
    assert a_log and d and bool(gamma) == (conv_block == "inverted") and one_d | a_log | d | gamma == skip
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    decayed = {n for n, p in names.items() if decay_of[id(p)] > 0}
    assert decayed == set(names) - skip
    assert any(n.endswith("x_proj_weight") for n in decayed) and "head.weight" in decayed


def test_group_matcher_puts_every_parameter_in_exactly_one_group():
    model = create_model("ssmamba_test", num_classes=3, depths=(1, 2, 2, 1))
    names = [n for n, _ in model.named_parameters()]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        members = [n for group in groups.values() for n in group]
        assert sorted(members) == sorted(names), coarse  # each exactly once
        group_of = {n: g for g, group in groups.items() for n in group}
        last = max(groups)  # the head's group: nothing but the head (and the final norm when coarse)
        assert set(groups[last]) == {"head.weight", "head.bias"} | ({"norm.weight", "norm.bias"} if coarse else set())
        for stage in (2, 3):  # a stage's downsampling norm goes with its conv, in the stage's first group
            assert group_of[f"stages.{stage}.down_norm.weight"] == group_of[f"stages.{stage}.downsample.weight"]
            assert group_of[f"stages.{stage}.down_norm.weight"] == group_of[f"stages.{stage}.blocks.0.norm1.weight"]
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) == 1 + sum((1, 2, 2, 1)) + 1  # stem, one per block, head
    assert "norm.weight" in fine[len(fine) - 2] and "stages.3.blocks.0.norm1.weight" in fine[len(fine) - 2]


def test_timm_layer_decay_gives_down_norm_its_stage_rate():
    model = create_model("ssmamba_test", num_classes=3)
    optimizer = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert scale_of[id(params["stages.2.down_norm.weight"])] == scale_of[id(params["stages.2.downsample.weight"])]
    assert scale_of[id(params["stages.2.down_norm.weight"])] < scale_of[id(params["head.weight"])]
