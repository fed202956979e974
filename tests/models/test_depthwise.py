"""``depthwise_conv2d``: F.conv2d(groups=C) exactly, except under CPU autocast, where it computes in float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmamba.models import create_model
from ssmamba.models.depthwise import depthwise_conv2d
from ssmamba.models.dms import MultiKernelDepthwiseConv
from ssmamba.models.ssmamba import LocalPerceptionResidual

GRIDS = [(2, 2), (4, 4), (5, 3), (14, 14)]  # the state-space stages' grids at 64 and 224 px, and an odd one


def _problem(grid, kernel, seed=0):
    torch.manual_seed(seed)
    c = 12
    x = torch.randn(3, c, *grid).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(c, 1, kernel, kernel, requires_grad=True)
    bias = torch.randn(c, requires_grad=True)
    return x, weight, bias


def _outputs_and_grads(fn, x, weight, bias, seed=1):
    out = fn(x, weight, bias)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return (out, *torch.autograd.grad(out.float(), (x, weight, bias), grad_out))


def _reference(x, weight, bias):
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("kernel", [3, 7])
def test_without_autocast_it_is_the_grouped_conv(grid, kernel):
    x, weight, bias = _problem(grid, kernel)
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
    """The DMS conv's input comes out of a linear layer in bfloat16: the result is the float32 conv of those values."""
    x, weight, bias = _problem((4, 4), 7)
    x16 = x.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_conv2d(x16, weight, bias)
    torch.testing.assert_close(out, _reference(x16.detach().float(), weight, bias), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert x16.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32


def test_the_model_layers_use_it_and_train_under_autocast():
    lpr, conv = LocalPerceptionResidual(8, 3), MultiKernelDepthwiseConv(9, (3, 5, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lpr(torch.randn(2, 4, 4, 8)).dtype == torch.float32
        assert conv(torch.randn(2, 9, 4, 4)).dtype == torch.float32
        model = create_model("ssmamba_test", num_classes=3)
        loss = F.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 2]))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
