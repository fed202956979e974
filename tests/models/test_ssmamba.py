"""The SSMamba backbone: shapes at any size, gradients, invariances, ablation switches, and a tiny learning task."""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention, DropPath

from ssmamba import create_model
from ssmamba.models.dms import DirectionalMultiScaleMixer, ScanDirection, scan_order
from ssmamba.models.ssmamba import (
    GELU,
    ConvBlock,
    DenseConvBlock,
    HybridBlock,
    LocalPerceptionResidual,
    SSMambaConfig,
)

SIZES = [(32, 32), (50, 50), (64, 64), (96, 96), (224, 224), (333, 517)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shapes_at_any_size(size):
    model = create_model("ssmamba_test", num_classes=4).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    h, w = size
    for _ in range(5):  # five stride-2 convs (2 in the stem), each ceil-halving
        h, w = (h + 1) // 2, (w + 1) // 2
    assert features.shape == (2, model.num_features, h, w)
    assert logits.shape == (2, 4)
    assert torch.isfinite(logits).all()


def test_tiny_runs_at_every_size():
    model = create_model("ssmamba_tiny", num_classes=4).eval()
    with torch.no_grad():
        for size in SIZES:
            assert model(torch.randn(1, 3, *size)).shape == (1, 4)


@pytest.mark.parametrize("conv_block", ["dense", "inverted"])
def test_every_parameter_gets_a_gradient(conv_block):
    model = create_model("ssmamba_test", num_classes=3, attn_blocks=1, depths=(1, 1, 2, 2), conv_block=conv_block)
    for name, parameter in model.named_parameters():  # a zero-initialised last BN scale blocks its branch at step 0
        if name.endswith("norm2.weight") and not parameter.any():
            torch.nn.init.ones_(parameter)
    model(torch.randn(2, 3, 128, 128)).logsumexp(1).sum().backward()  # coarse scans need L > 1 to use A
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_eval_is_batch_size_invariant():
    model = create_model("ssmamba_test", num_classes=3).eval()
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_gives_same_output_and_grads():
    model = create_model("ssmamba_test", num_classes=3).train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    out_plain = model(x)
    out_plain.sum().backward()
    grads_plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    out_ckpt = model(x)
    out_ckpt.sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_plain[n], msg=n)


def test_num_classes_zero_returns_pooled_embeddings_and_reset_classifier():
    model = create_model("ssmamba_test", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


def test_features_only_and_intermediates():
    features = create_model("ssmamba_test", features_only=True, out_indices=(1, 3)).eval()
    maps = features(torch.randn(1, 3, 128, 96))
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert [(m.shape[2], m.shape[3]) for m in maps] == [(16, 12), (4, 3)]
    assert features.feature_info.reduction() == [8, 32]
    model = create_model("ssmamba_test").eval()
    final, inter = model.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert len(inter) == 4 and final.shape == (1, model.num_features, 2, 2)


ABLATIONS = {
    "single_direction": dict(directions=("row",)),
    "single_scale": dict(scales=(1,), conv_kernels=(3,)),
    "diagonals": dict(directions=("row", "row_reverse", "column", "column_reverse", "diagonal", "diagonal_reverse")),
    "no_lpr": dict(lpr=False),
    "attention": dict(attn_blocks=1),
    "all_state_space": dict(conv_stages=0),
}


def _mixers(model):
    return [m for m in model.modules() if isinstance(m, DirectionalMultiScaleMixer)]


def _check_single_direction(model):
    assert all(scan.directions == (ScanDirection.ROW,) for m in _mixers(model) for scan in m.scans)


def _check_single_scale(model):
    for mixer in _mixers(model):
        assert mixer.scales == (1,) and len(mixer.scans) == 1
        assert [conv.kernel_size for conv in mixer.local_conv.convs] == [(3, 3)]


def _check_diagonals(model):
    for mixer in _mixers(model):
        for scan in mixer.scans:
            assert {ScanDirection.DIAGONAL, ScanDirection.DIAGONAL_REVERSE} <= set(scan.directions)
            assert scan.A_log.shape[0] == 6 * mixer.out_norm.normalized_shape[0]  # one (Δ, A, B, C, D) per direction


def _check_no_lpr(model):
    assert not any(isinstance(m, LocalPerceptionResidual) for m in model.modules())


def _check_attention(model):
    for stage in model.stages[model.cfg.conv_stages:]:
        kinds = [block.use_attention for block in stage.blocks]
        assert kinds == [False] * (len(kinds) - 1) + [True]
        assert isinstance(stage.blocks[-1].mixer, Attention)


def _check_all_state_space(model):
    assert not any(isinstance(m, ConvBlock) for m in model.modules())
    assert all(isinstance(block, HybridBlock) for stage in model.stages for block in stage.blocks)


ABLATION_CHECKS = {"single_direction": _check_single_direction, "single_scale": _check_single_scale,
                   "diagonals": _check_diagonals, "no_lpr": _check_no_lpr, "attention": _check_attention,
                   "all_state_space": _check_all_state_space}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_switches_build_run_and_change_what_they_name(name):
    model = create_model("ssmamba_test", num_classes=2, depths=(1, 1, 2, 2), **ABLATIONS[name])
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    ABLATION_CHECKS[name](model)
    reference = create_model("ssmamba_test", num_classes=2, depths=(1, 1, 2, 2))
    for check in ABLATION_CHECKS.values():  # the default model is none of the ablations
        with pytest.raises(AssertionError):
            check(reference)


def test_single_direction_mixer_is_causal_in_raster_order():
    """With one forward row scan and a pointwise local conv, a token's output depends on no later token."""
    torch.manual_seed(0)
    mixer = DirectionalMultiScaleMixer(8, directions=("row",), scales=(1,), conv_kernels=(1,), d_state=4)
    x = torch.randn(1, 4, 5, 8, requires_grad=True)
    t = 2 * 5 + 2  # the token at row 2, column 2
    mixer(x).flatten(1, 2)[0, t].sum().backward()
    influence = x.grad.flatten(1, 2)[0].abs().sum(-1)
    assert (influence[t + 1:] == 0).all() and (influence[: t + 1] > 0).all()
    both = DirectionalMultiScaleMixer(8, directions=("row", "row_reverse"), scales=(1,), conv_kernels=(1,), d_state=4)
    x.grad = None
    both(x).flatten(1, 2)[0, t].sum().backward()
    assert (x.grad.flatten(1, 2)[0, t + 1:].abs().sum(-1) > 0).all()


def test_no_lpr_removes_the_branch():
    model = create_model("ssmamba_test", lpr=False)
    assert not any(isinstance(m, LocalPerceptionResidual) for m in model.modules())


@pytest.mark.parametrize("direction", list(ScanDirection))
def test_scan_orders_are_permutations(direction):
    order = scan_order(direction, 5, 7)
    assert sorted(order.tolist()) == list(range(35))


def test_dms_block_has_a_global_receptive_field():
    """A change at one corner of the input reaches the opposite corner after one DMS block (any direction set
    with a forward and a backward pass covers both halves of the grid)."""
    torch.manual_seed(0)
    mixer = DirectionalMultiScaleMixer(8, scales=(1,), conv_kernels=(3,), d_state=4)
    with torch.no_grad():  # larger Δ so the signal survives 64 steps of decay clearly above float noise
        for scan in mixer.scans:
            scan.dt_bias.fill_(-2.0)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    mixer(x)[0, 7, 7].sum().backward()  # bottom-right output token
    assert x.grad[0, 0, 0].abs().sum() > 1e-8  # depends on the top-left input token
    x.grad = None
    mixer(x)[0, 0, 0].sum().backward()
    assert x.grad[0, 7, 7].abs().sum() > 1e-8


def test_lpr_kernel_is_local():
    lpr = LocalPerceptionResidual(4, kernel_size=3)
    x = torch.randn(1, 9, 9, 4, requires_grad=True)
    lpr(x)[0, 4, 4].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().tolist()
    assert touched and all(abs(i - 4) <= 1 and abs(j - 4) <= 1 for i, j in touched)


def test_hybrid_block_keeps_shape():
    cfg = SSMambaConfig(dims=(8, 16), depths=(1, 1), d_state=4)
    block = HybridBlock(16, cfg)
    x = torch.randn(2, 5, 7, 16)
    assert block(x).shape == x.shape


def test_tiny_model_learns_a_small_task():
    """ssmamba_test separates two texture classes (horizontal vs vertical stripes under noise) it never saw."""
    torch.manual_seed(0)

    def batch(n):
        labels = torch.randint(0, 2, (n,))
        grid = torch.arange(32).float()
        phase = torch.rand(n, 1, 1) * 6.28
        stripes_h = torch.sin(grid.view(1, 32, 1) * 0.8 + phase).expand(n, 32, 32)
        stripes_v = torch.sin(grid.view(1, 1, 32) * 0.8 + phase).expand(n, 32, 32)
        img = torch.where(labels.view(n, 1, 1) == 1, stripes_h, stripes_v)
        return img.unsqueeze(1).repeat(1, 3, 1, 1) + 0.5 * torch.randn(n, 3, 32, 32), labels

    model = create_model("ssmamba_test", num_classes=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        x, y = batch(32)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = batch(256)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_test_variant_overfits_a_fixed_batch():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    model = create_model("ssmamba_test", num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("direction", list(ScanDirection))
def test_sequence_reordering_matches_scan_order_and_inverts(direction):
    from ssmamba.models.dms import from_sequence, to_sequence

    t = torch.randn(2, 3, 5 * 7)
    seq = to_sequence(t, direction, 5, 7)
    torch.testing.assert_close(seq, t[..., scan_order(direction, 5, 7)])
    torch.testing.assert_close(from_sequence(seq, direction, 5, 7), t)


def test_drop_path_rates_grow_linearly_over_the_blocks():
    model = create_model("ssmamba_test", num_classes=2, depths=(1, 2, 2, 1), drop_path_rate=0.5)
    blocks = [block for stage in model.stages for block in stage.blocks]
    rates = [block.drop_path.drop_prob if isinstance(block.drop_path, DropPath) else 0.0 for block in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.5, 6).tolist())
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)  # rate 0: no module to run


def test_drop_path_drops_whole_samples_of_the_residual_branch_and_keeps_the_expectation():
    """In training each sample's branch is dropped (x) or kept and scaled by 1/keep; at eval it is always kept."""
    torch.manual_seed(0)
    cfg = SSMambaConfig(dims=(8, 16), depths=(1, 1), d_state=4, lpr=False, layer_scale_init=1.0)
    block = HybridBlock(16, cfg, drop_path=0.5)
    x = torch.randn(400, 2, 3, 16)
    with torch.no_grad():
        block.eval()
        full = block(x)
        mixed = x + block.gamma1 * block.mixer(block.norm1(x))
        block.train()
        out = block(x)
    # per sample: the mixer branch is dropped or doubled, then the MLP branch likewise, on what came out of it
    candidates = []
    for mixer_scale in (0.0, 2.0):
        y = x + mixer_scale * (mixed - x)
        for mlp_scale in (0.0, 2.0):
            candidates.append(y + mlp_scale * block.gamma2 * block.mlp(block.norm2(y)))
    matches = torch.stack([(out - c).flatten(1).abs().amax(1) < 1e-5 for c in candidates])  # (4, samples)
    assert matches.any(0).all()  # every sample is one of the four
    assert (matches.float().mean(1) - 0.25).abs().max() < 0.08  # each about as often
    assert not torch.allclose(out, full)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), full)


def test_dense_conv_block_starts_as_the_identity_then_learns():
    torch.manual_seed(0)
    block = DenseConvBlock(8, SSMambaConfig())
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)  # the last BN's scale starts at zero
    block(x).square().sum().backward()
    assert block.norm2.weight.grad.abs().sum() > 0  # the zero scale is learnt out of
    with torch.no_grad():
        block.norm2.weight.fill_(1.0)
    y = block(x)
    assert not torch.allclose(y, x) and y.shape == x.shape
    y.sum().backward()
    assert block.conv1.weight.grad.abs().sum() > 0


def test_conv_block_is_a_config_value_saved_with_the_checkpoint(tmp_path):
    from ssmamba.models import save_pretrained

    model = create_model("ssmamba_test", num_classes=2, conv_block="dense").eval()
    conv_stages = model.stages[: model.cfg.conv_stages]
    assert all(isinstance(block, DenseConvBlock) for stage in conv_stages for block in stage.blocks)
    assert not any(isinstance(m, ConvBlock) for m in model.modules())
    inverted = create_model("ssmamba_test", num_classes=2, conv_block="inverted")
    assert all(isinstance(block, ConvBlock) for stage in inverted.stages[:2] for block in stage.blocks)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = create_model(checkpoint=tmp_path / "ckpt").eval()
    x = torch.randn(1, 3, 48, 48)
    assert loaded.cfg.conv_block == "dense" and torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="conv_block must be one of"):
        SSMambaConfig(conv_block="depthwise")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "tokens", "strided"])
def test_gelu_is_torch_gelu_in_every_layout(layout, dtype):
    """Our GELU runs a channels-last map as its (B, H, W, C) view: bit for bit what nn.GELU gives the same values
    laid out contiguously (PyTorch's own channels-last kernel rounds differently, within 1e-6 in float32), with
    the input's layout kept, and the same gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 24, 5, 7, dtype=dtype) * 3
    x = {"channels_last": x.contiguous(memory_format=torch.channels_last), "contiguous": x,
         "tokens": x.flatten(2), "strided": x[:, :, ::2]}[layout].requires_grad_()
    # other layouts pass through to nn.GELU as they are
    dense = x.detach().contiguous().requires_grad_() if layout == "channels_last" else x
    grad = torch.randn_like(x)
    out, expected = GELU()(x), torch.nn.GELU()(dense)
    assert torch.equal(out, expected) and out.stride() == torch.nn.GELU()(x).stride()
    (g,) = torch.autograd.grad(out, x, grad)
    (expected_g,) = torch.autograd.grad(expected, dense, grad.contiguous() if layout == "channels_last" else grad)
    assert torch.equal(g, expected_g)
    exact = 0.5 * x.double() * (1 + torch.erf(x.double() / 2**0.5))
    assert (out.double() - exact).abs().max() < (1e-5 if dtype == torch.float32 else 2e-2)


def test_stem_and_conv_blocks_use_the_layout_aware_gelu():
    for conv_block in ("dense", "inverted"):
        model = create_model("ssmamba_test", conv_block=conv_block)
        assert type(model.stem[2]) is GELU
        assert all(type(block.act) is GELU for block in model.stages[0].blocks)


@pytest.mark.parametrize("use_attention", [False, True])
@pytest.mark.parametrize("grid", [(5, 6), (1, 1)])  # out_proj's and fc2's weights smaller / larger than the outputs
def test_hybrid_block_folds_layer_scales_into_projections_exactly(use_attention, grid):
    """The layer scales gamma1, gamma2 multiply out_proj's and fc2's weights, or their outputs where those are
    smaller: the block's values and every gradient are those of
    x + DropPath(gamma1 * mixer) + DropPath(gamma2 * mlp)."""
    torch.manual_seed(0)
    cfg = SSMambaConfig(dims=(8, 16, 32, 64), d_state=4, mlp_ratio=2.0, layer_scale_init=0.3, attn_head_dim=8)
    block = HybridBlock(32, cfg, use_attention=use_attention, drop_path=0.3).train()
    with torch.no_grad():
        block.gamma1.uniform_(-1, 1)
        block.gamma2.uniform_(-1, 1)

    def unfolded(x):
        x = x + block.lpr(x)
        y = block.norm1(x)
        y = block.mixer(y.flatten(1, 2)).view_as(y) if use_attention else block.mixer(y)
        x = x + block.drop_path(block.gamma1 * y)
        return x + block.drop_path(block.gamma2 * block.mlp(block.norm2(x)))

    x = torch.randn(4, *grid, 32, requires_grad=True)
    results = []
    for forward in (block, unfolded):
        torch.manual_seed(1)  # the same drop-path draws
        out = forward(x)
        results.append((out, torch.autograd.grad(out.square().sum(), [x, *block.parameters()])))
    (out, grads), (expected, expected_grads) = results
    assert (out - expected).abs().max() < 1e-5
    block.drop_path.eval()  # without drop path some samples come out otherwise: the seed did drop branches
    assert (block(x) - out).flatten(1).abs().amax(1).gt(1e-3).any()
    for g, e in zip(grads, expected_grads):
        assert (g - e).abs().max() <= 1e-5 * (1 + e.abs().max()), (g - e).abs().max()
