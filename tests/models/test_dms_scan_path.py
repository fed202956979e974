"""The DMS mixer's in-place directional scan against the path it replaced (explicit flips, transposes and stacks
around one grouped selective scan): same parameters, same outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from ssmamba.models.dms import (
    DirectionalMultiScaleMixer,
    MultiKernelDepthwiseConv,
    _DirectionalScan,
    from_sequence,
    to_sequence,
    upsample_nearest,
)
from ssmamba.ops import ScanDirection, selective_scan_ref


def stacked_scan(scan: _DirectionalScan, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The previous `_DirectionalScan.forward`, verbatim but with the reference scan and the scale weight on the
    output, as the mixer applied it: the oracle."""
    b, e, h, w = x.shape
    k, n, r, length = len(scan.directions), scan.d_state, scan.dt_rank, h * w
    flat = x.flatten(2)
    x_dbl = torch.matmul(scan.x_proj_weight.view(k * (r + 2 * n), e), flat).view(b, k, r + 2 * n, length)
    x_dbl = torch.stack([to_sequence(x_dbl[:, i], d, h, w) for i, d in enumerate(scan.directions)], 1)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=2)
    dt = torch.einsum("ker,bkrl->bkel", scan.dt_proj_weight, dt)
    u = torch.stack([to_sequence(flat, d, h, w) for d in scan.directions], 1)
    y = selective_scan_ref(
        u.reshape(b, k * e, length), dt.reshape(b, k * e, length), -torch.exp(scan.A_log.float()),
        B.contiguous(), C.contiguous(), scan.D.float(), delta_bias=scan.dt_bias.float(), delta_softplus=True,
    ).view(b, k, e, length)  # fmt: skip
    out = from_sequence(y[:, 0], scan.directions[0], h, w)
    for i in range(1, k):
        out = out + from_sequence(y[:, i], scan.directions[i], h, w)
    out = out.view(b, e, h, w)
    return out if scale is None else scale * out


def grads_of(module: torch.nn.Module, x: torch.Tensor, forward) -> dict[str, torch.Tensor]:
    module.zero_grad()
    x = x.detach().requires_grad_()
    out = forward(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return {"out": out.detach(), "dx": x.grad} | grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("directions", [("row", "row_reverse", "column", "column_reverse"),
                                        ("row", "diagonal", "diagonal_reverse")])  # fmt: skip
def test_directional_scan_matches_the_stacked_path(channels_last, directions):
    torch.manual_seed(0)
    scan = _DirectionalScan(12, tuple(ScanDirection(d) for d in directions), d_state=8, dt_rank=3)
    x = torch.randn(2, 12, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    new = grads_of(scan, x, scan)
    old = grads_of(scan, x, lambda t: stacked_scan(scan, t))
    assert new.keys() == old.keys() and len(new) == 2 + 5  # out, dx and all five parameters
    errors = {name: relative(new[name], old[name]) for name in old}
    assert max(errors.values()) < 1e-5, errors


def test_mixer_matches_the_stacked_path_with_unchanged_parameters(monkeypatch):
    torch.manual_seed(0)
    mixer = DirectionalMultiScaleMixer(16, scales=(1, 2), d_state=8)
    with torch.no_grad():
        mixer.scale_logits.copy_(torch.tensor([0.3, -0.4]))  # the scales' weights about 1.34 and 0.66, not 1 and 1
    keys = set(mixer.state_dict())
    assert {"scans.0.x_proj_weight", "scans.0.dt_proj_weight", "scans.0.dt_bias", "scans.0.A_log", "scans.0.D",
            "scans.1.A_log", "scale_logits", "in_proj.weight", "out_proj.weight"} <= keys  # fmt: skip
    x = torch.randn(2, 7, 9, 16)  # (B, H, W, C), odd grid; the 2x scale scans a 4 x 5 grid
    new = grads_of(mixer, x, mixer)
    monkeypatch.setattr(_DirectionalScan, "forward", stacked_scan)
    old = grads_of(mixer, x, mixer)
    errors = {name: relative(new[name], old[name]) for name in old}
    assert new.keys() == old.keys() and max(errors.values()) < 1e-5, errors


def test_mixer_under_bfloat16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    mixer = DirectionalMultiScaleMixer(16, d_state=8)
    x = torch.randn(2, 6, 6, 16)
    expected = mixer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixer(x)
    out.float().sum().backward()
    assert relative(out.float(), expected) < 3e-2
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters() if p.grad is not None)


def test_mixer_under_bfloat16_autocast_scans_in_bfloat16(monkeypatch):
    """Under autocast the scan reads and writes bfloat16 (it computes in float32): no float32 copies of delta, B
    and C in the forward, nor casts of their gradients back in the backward."""
    import ssmamba.models.dms as dms

    seen = []

    def spy(u, delta, A, B, C, *args, **kwargs):
        seen.append((u.dtype, delta.dtype, B.dtype, C.dtype))
        out = directional_scan(u, delta, A, B, C, *args, **kwargs)
        seen.append(out.dtype)
        return out

    directional_scan = dms.directional_scan
    monkeypatch.setattr(dms, "directional_scan", spy)
    mixer = DirectionalMultiScaleMixer(16, scales=(1, 2), d_state=8)
    x = torch.randn(2, 6, 6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixer(x)
    out.float().sum().backward()
    bf16 = torch.bfloat16
    assert seen == [(bf16,) * 4, bf16] * 2  # both scales
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    mixer(x)  # without autocast the mixer stays float32
    assert seen[-2:] == [(torch.float32,) * 4, torch.float32]


@pytest.mark.parametrize("size, out_size", [((4, 5), (7, 9)), ((28, 28), (56, 56)), ((3, 3), (5, 6)), ((1, 1), (3, 2))])
def test_upsample_nearest_is_interpolate_nearest(size, out_size):
    x = torch.randn(2, 6, *size).contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.interpolate(x, size=out_size, mode="nearest").permute(0, 2, 3, 1)
    assert torch.equal(upsample_nearest(x, *out_size), expected)


def test_multi_kernel_conv_is_one_conv_per_channel_group():
    torch.manual_seed(0)
    conv = MultiKernelDepthwiseConv(11, (3, 5, 7))  # uneven groups: 4, 4, 3 channels
    x = torch.randn(2, 11, 9, 8, requires_grad=True)
    chunks = torch.split(x, conv.splits, dim=1)
    expected = torch.cat([c(chunk) for c, chunk in zip(conv.convs, chunks)], dim=1)  # the previous forward
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, *conv.parameters()])
    out = conv(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *conv.parameters()])
    assert relative(out, expected) < 1e-6
    assert all(relative(g, e) < 1e-5 for g, e in zip(grads, expected_grads))


def test_scalar_decay_mixer_has_one_A_per_channel_and_matches_the_reference_scan(monkeypatch):
    from ssmamba.models import SSMambaConfig

    assert SSMambaConfig().scalar_decay is False  # the default architecture is unchanged
    torch.manual_seed(0)
    mixer = DirectionalMultiScaleMixer(16, d_state=8, scalar_decay=True)
    assert all(scan.A_log.shape == (4 * 16, 1) for scan in mixer.scans)
    x = torch.randn(2, 5, 7, 16)
    fused = grads_of(mixer, x, mixer)
    monkeypatch.setenv("SSMAMBA_SCAN_BACKEND", "ref")
    reference = grads_of(mixer, x, mixer)
    errors = {name: relative(fused[name], reference[name]) for name in reference}
    assert fused.keys() == reference.keys() and max(errors.values()) < 1e-5, errors
