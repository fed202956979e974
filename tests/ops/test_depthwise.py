"""``depthwise_conv2d``: F.conv2d(groups=C); on CPU with a gradient wanted, our kernels (forward, input and weight
gradients) in float32, bfloat16 or float64 storage, skipping the taps beyond each channel's radius.

The reference is ``F.conv2d`` and its autograd (oneDNN): outputs and all three gradients, per dtype tolerances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmamba.models import create_model
from ssmamba.ops.depthwise import depthwise_conv2d, depthwise_conv2d_cpu
from ssmamba.models.dms import MultiKernelDepthwiseConv
from ssmamba.ops import ExtensionBuildError, depthwise
from ssmamba.models.ssmamba import LocalPerceptionResidual

GRIDS = [(2, 2), (4, 4), (5, 3), (14, 14)]  # the state-space stages' grids at 64 and 224 px, and an odd one
# float32: the weight gradient sums batch x H x W products of O(1) values in another order than oneDNN's (|grad|
# ~ 20 for 16 x 6 x 5); a wrong tap or channel is off by O(1)
TOLERANCES = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _problem(grid, kernel, seed=0, batch=3, channels=12, dtype=torch.float32, channels_last=True):
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, *grid, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weight = torch.randn(channels, 1, kernel, kernel, dtype=dtype, requires_grad=True)
    bias = torch.randn(channels, dtype=dtype, requires_grad=True)
    return x.requires_grad_(), weight, bias


def _outputs_and_grads(fn, x, weight, bias, seed=1):
    out = fn(x, weight, bias)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return (out, *torch.autograd.grad(out.float(), (x, weight, bias), grad_out))


def _reference(x, weight, bias):
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])


@pytest.mark.parametrize("grid", [*GRIDS, (1, 1), (3, 9)])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9, 11])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_path_matches_the_grouped_conv(grid, kernel, dtype):
    """Outputs and gradients of input, weight and bias; kernels larger than the grid included (9 on 2x2)."""
    x, weight, bias = _problem(grid, kernel, dtype=dtype)
    got = _outputs_and_grads(depthwise_conv2d_cpu, x, weight, bias)
    for g, e in zip(got, _outputs_and_grads(_reference, x, weight, bias)):
        assert g.dtype == dtype
        torch.testing.assert_close(g, e, **TOLERANCES[dtype])


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("batch, channels", [(1, 5), (7, 33), (16, 192)])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_path_in_any_layout_batch_and_thread_count(channels_last, batch, channels, threads):
    """Odd channel counts (no whole SIMD vector), a batch of one and batches that split unevenly over threads."""
    x, weight, bias = _problem((6, 5), 7, batch=batch, channels=channels, channels_last=channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _outputs_and_grads(depthwise_conv2d, x, weight, bias)
    finally:
        torch.set_num_threads(before)
    for g, e in zip(got, _outputs_and_grads(_reference, x, weight, bias)):
        torch.testing.assert_close(g, e, **TOLERANCES[torch.float32])


def test_kernels_larger_than_the_compiled_ones_use_onednn(monkeypatch):
    """13 x 13 is beyond the kernels' 11 x 11: the grouped conv runs, with the same values and gradients."""
    monkeypatch.setattr(depthwise, "depthwise_conv2d_cpu", lambda *args: pytest.fail("the kernels were called"))
    x, weight, bias = _problem((6, 5), 13)
    for g, e in zip(_outputs_and_grads(depthwise_conv2d, x, weight, bias),
                    _outputs_and_grads(_reference, x, weight, bias)):
        assert torch.equal(g, e)


def test_the_kernel_path_passes_gradcheck():
    x, weight, bias = _problem((4, 3), 5, batch=2, channels=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(depthwise_conv2d_cpu, (x, weight, bias))
    assert torch.autograd.gradcheck(lambda x, w: depthwise_conv2d_cpu(x, w, None), (x, weight))


def test_without_bias_or_input_gradient():
    x, weight, _ = _problem((4, 4), 7)
    x = x.detach()
    out = depthwise_conv2d(x, weight, None)
    (grad_weight,) = torch.autograd.grad(out, weight, torch.ones_like(out))
    (expected,) = torch.autograd.grad(_reference(x, weight, None), weight, torch.ones_like(out))
    torch.testing.assert_close(grad_weight, expected, **TOLERANCES[torch.float32])


def test_the_kernel_is_used_only_where_a_gradient_is_wanted(monkeypatch):
    calls = []
    monkeypatch.setattr(depthwise, "depthwise_conv2d_cpu",
                        lambda x, w, b, radii=None: calls.append(1) or _reference(x, w, b))
    x, weight, bias = _problem((4, 4), 3)
    with torch.no_grad():
        depthwise_conv2d(x, weight, bias)
    depthwise_conv2d(x.detach(), weight.detach(), bias.detach())
    assert calls == []
    depthwise_conv2d(x, weight.detach(), bias)
    depthwise_conv2d(x.detach(), weight, bias)
    assert calls == [1, 1]


def test_a_bfloat16_model_without_autocast_trains_with_the_kernel():
    """bfloat16 storage computed in float32: the float32 conv of the same values, rounded once; the weight and bias
    gradients come back in the parameters' bfloat16."""
    x, weight, bias = (t.detach().bfloat16().requires_grad_() for t in _problem((5, 4), 7))
    out = depthwise_conv2d(x, weight, bias)
    grad_out = torch.randn(out.shape).bfloat16()
    got = (out, *torch.autograd.grad(out, (x, weight, bias), grad_out))
    wide = [t.detach().float().requires_grad_() for t in (x, weight, bias)]
    reference = _reference(*wide)
    expected = (reference, *torch.autograd.grad(reference, wide, grad_out.float()))
    for g, e in zip(got, expected):  # one rounding of the float32 sums: within half a bfloat16 step (2^-8 relative)
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g, e.bfloat16(), rtol=2**-8, atol=1e-6)


def test_a_float16_model_trains_with_onednn():
    x, weight, bias = (t.detach().half().requires_grad_() for t in _problem((4, 4), 7))
    got = _outputs_and_grads(depthwise_conv2d, x, weight, bias)
    for g, e in zip(got, _outputs_and_grads(_reference, x, weight, bias)):
        assert g.dtype == torch.float16 and torch.equal(g, e)


@pytest.mark.parametrize("grid", [*GRIDS, (7, 7), (1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radii_skip_only_taps_that_are_zero(grid, dtype):
    """Channels whose kernels are zero beyond their radius (a 3x3, a 5x5 and a 7x7 group padded to 7x7, across SIMD
    packs: 20 channels each): the same output and input gradient as the full conv, and a weight gradient equal to
    the full one inside each radius and zero outside it."""
    channels = 60
    x, weight, bias = _problem(grid, 7, channels=channels, dtype=dtype)
    radii = torch.tensor([1] * 20 + [2] * 20 + [3] * 20)
    taps = torch.arange(7) - 3
    inside = (taps.abs()[None, :, None] <= radii[:, None, None]) & (taps.abs()[None, None, :] <= radii[:, None, None])
    weight = (weight.detach() * inside[:, None]).requires_grad_()
    got = _outputs_and_grads(lambda x, w, b: depthwise_conv2d(x, w, b, radii), x, weight, bias)
    expected = _outputs_and_grads(_reference, x, weight, bias)
    for g, e in zip(got[:2] + got[3:], expected[:2] + expected[3:]):
        torch.testing.assert_close(g, e, **TOLERANCES[dtype])
    torch.testing.assert_close(got[2], expected[2] * inside[:, None], **TOLERANCES[dtype])
    assert torch.all(got[2][~inside[:, None].expand_as(got[2])] == 0)


def test_multi_kernel_conv_passes_its_radii():
    conv = MultiKernelDepthwiseConv(12, (3, 5, 7))
    assert conv.radii.tolist() == [1] * 4 + [2] * 4 + [3] * 4
    assert "radii" not in conv.state_dict()  # derived from the architecture, not saved


def test_without_the_compiled_kernel_it_is_the_grouped_conv(monkeypatch):
    def unavailable():
        raise ExtensionBuildError("SSMAMBA_NO_BUILD=1: compiling the CPU kernel is disabled")

    monkeypatch.setattr(depthwise, "load_extension", unavailable)
    x, weight, bias = _problem((5, 3), 7)
    for got, expected in zip(_outputs_and_grads(depthwise_conv2d, x, weight, bias),
                             _outputs_and_grads(_reference, x, weight, bias)):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("kernel", [3, 7])
def test_under_cpu_autocast_it_computes_in_float32(grid, kernel):
    """Output and gradients at float32 precision (a bfloat16 conv would be off by ~1e-2), output dtype float32."""
    x, weight, bias = _problem(grid, kernel)
    expected = _outputs_and_grads(_reference, x, weight, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _outputs_and_grads(depthwise_conv2d, x, weight, bias)
        bf16_conv = _reference(x, weight, bias)  # what autocast alone would compute
    assert got[0].dtype == torch.float32 and bf16_conv.dtype == torch.bfloat16
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert (bf16_conv.float() - expected[0]).abs().max() > 1e-3  # so the tolerance above tells the two apart


def test_bfloat16_inputs_under_autocast_are_computed_in_float32():
    """The DMS conv's input comes out of a linear layer in bfloat16: the result is the float32 conv of those values,
    rounded once to bfloat16 (the dtype the mixer goes on in), and the input's gradient is bfloat16."""
    x, weight, bias = _problem((4, 4), 7)
    x16 = x.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_conv2d(x16, weight, bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, _reference(x16.detach().float(), weight, bias).bfloat16(), rtol=0, atol=0)
    out.float().sum().backward()
    assert x16.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
