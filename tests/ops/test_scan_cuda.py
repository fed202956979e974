"""The cuda backend against the reference on a GPU (skipped without one). Each of its paths is checked: whatever is
installed (mamba_ssm's kernel if it imports), our Triton kernels, and the plain reference loop."""

from __future__ import annotations

import pytest
import torch

from scan_problems import make_problem, outputs_and_grads, relative_error
from ssmamba.ops import choose_backend, scan_cuda, selective_scan, selective_scan_ref
from ssmamba.ops.scan_ref import scan_steps

pytestmark = pytest.mark.gpu


def on_cuda(problem):
    for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        tensor = getattr(problem, name)
        if tensor is not None:
            setattr(problem, name, tensor.detach().cuda().requires_grad_())
    return problem


def cuda_scan(*args, **kwargs):
    return selective_scan(*args, backend="cuda", **kwargs)


@pytest.fixture(params=["as-installed", "triton", "reference-loop"])
def cuda_path(request, monkeypatch):
    if request.param != "as-installed":
        monkeypatch.setattr(scan_cuda, "mamba_ssm_scan", lambda: (None, "disabled by the test"))
    if request.param == "triton":
        pytest.importorskip("triton")
        from ssmamba.ops.scan_triton import triton_scan_steps

        monkeypatch.setattr(scan_cuda, "fallback_recurrence", lambda: (triton_scan_steps, "Triton, forced by the test"))
    if request.param == "reference-loop":
        monkeypatch.setattr(scan_cuda, "fallback_recurrence", lambda: (scan_steps, "forced by the test"))
    return request.param


@pytest.mark.parametrize("length, state", [(1, 4), (37, 16), (300, 16), (1024, 1)])
def test_matches_ref(cuda_path, length, state):
    p = on_cuda(make_problem(batch=2, dim=8, length=length, state=state, groups=2))
    expected = outputs_and_grads(p, selective_scan_ref)
    actual = outputs_and_grads(p, cuda_scan)
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("dim, groups, state, length", [(128, 2, 16, 300), (320, None, 4, 37), (1024, 4, 16, 65)])
def test_matches_ref_with_several_channel_blocks(cuda_path, dim, groups, state, length):
    """More channels per group than one Triton program holds: dB and dC are sums over the channel blocks."""
    p = on_cuda(make_problem(batch=2, dim=dim, length=length, state=state, groups=groups))
    expected = outputs_and_grads(p, selective_scan_ref)
    actual = outputs_and_grads(p, cuda_scan)
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    assert max(errors.values()) <= 1e-5, errors


def test_float64_uses_the_pytorch_path(cuda_path):
    p = on_cuda(make_problem(length=20, groups=2, dtype=torch.float64))
    assert p.run(cuda_scan)[0].dtype == torch.float64


def test_auto_picks_cuda_for_cuda_tensors(monkeypatch):
    monkeypatch.delenv("SSMAMBA_SCAN_BACKEND", raising=False)
    assert choose_backend(torch.device("cuda"))[0] == "cuda"
    p = on_cuda(make_problem(length=20, groups=2, requires_grad=False))
    torch.testing.assert_close(p.run(selective_scan)[0], p.run(cuda_scan)[0])


def test_large_delta_stays_finite(cuda_path):
    p = on_cuda(make_problem(batch=1, dim=4, length=512, state=16, groups=None, delta_softplus=False))
    with torch.no_grad():
        p.delta.fill_(50.0)
    out, last = p.run(cuda_scan)
    (out.sum() + last.sum()).backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in p.tensors())
