"""The fused CPU kernel against the reference: outputs and the gradient of every input, gradcheck, stability."""

from __future__ import annotations

import pytest
import torch

from scan_problems import make_problem, outputs_and_grads, relative_error
from ssmamba.ops import selective_scan, selective_scan_ref

TOLERANCE = 1e-5  # norm-relative, float32


def cpu_scan(*args, **kwargs):
    return selective_scan(*args, backend="cpu", **kwargs)


def assert_matches_ref(problem, tolerance=TOLERANCE):
    expected = outputs_and_grads(problem, selective_scan_ref)
    actual = outputs_and_grads(problem, cpu_scan)
    assert expected.keys() == actual.keys()
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    assert max(errors.values()) <= tolerance, errors
    for name in expected:
        assert actual[name].shape == expected[name].shape, name


@pytest.mark.parametrize("state", [1, 4, 16])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 257, 4096])
def test_matches_ref_with_every_option(cpu_kernel, length, state):
    # grouped B/C, D, z, delta_bias, softplus and the last state all on; long sequences with a small problem
    batch, dim = (1, 4) if length > 1000 else (2, 8)
    assert_matches_ref(make_problem(batch=batch, dim=dim, length=length, state=state, groups=2))


@pytest.mark.parametrize(
    "options",
    [
        dict(with_D=False),
        dict(with_z=False),
        dict(with_delta_bias=False),
        dict(delta_softplus=False),
        dict(groups=None),  # B, C as (batch, N, L)
        dict(groups=8),  # one channel per group
        dict(return_last_state=False),
        dict(with_D=False, with_z=False, with_delta_bias=False, delta_softplus=False, groups=None,
             return_last_state=False),  # fmt: skip
    ],
    ids=["no-D", "no-z", "no-bias", "no-softplus", "ungrouped", "G=dim", "no-last-state", "bare"],
)
def test_matches_ref_per_option(cpu_kernel, options):
    assert_matches_ref(make_problem(batch=2, dim=8, length=64, state=4, **({"groups": 2} | options)))


def test_state_not_a_multiple_of_the_simd_width(cpu_kernel):
    assert_matches_ref(make_problem(length=33, state=11, groups=2))


@pytest.mark.parametrize("delta_softplus", [True, False])
def test_gradcheck_float64(cpu_kernel, delta_softplus):
    p = make_problem(batch=2, dim=4, length=6, state=3, groups=2, delta_softplus=delta_softplus, dtype=torch.float64)

    def scan(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus,
                              return_last_state=True, backend="cpu")  # fmt: skip

    assert torch.autograd.gradcheck(scan, p.tensors(), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_float64_stays_float64_and_matches_ref_closely(cpu_kernel):
    p = make_problem(length=50, state=5, groups=2, dtype=torch.float64)
    expected = outputs_and_grads(p, selective_scan_ref)
    actual = outputs_and_grads(p, cpu_scan)
    assert actual["out"].dtype == torch.float64
    assert max(relative_error(actual[k], expected[k]) for k in expected) < 1e-12


def test_only_last_state_used_in_loss(cpu_kernel):
    p = make_problem(length=20, groups=2)
    for scan in (selective_scan_ref, cpu_scan):
        _, last = p.run(scan)
        grads = torch.autograd.grad(last.sum(), [p.u, p.B])
        if scan is selective_scan_ref:
            expected = grads
    for g, e in zip(grads, expected):
        assert relative_error(g, e) <= TOLERANCE


@pytest.mark.parametrize("delta_scale", [50.0, 1e-7], ids=["huge-delta", "tiny-delta"])
def test_extreme_delta_matches_ref(cpu_kernel, delta_scale):
    """Huge Δ: exp(ΔA) underflows to 0 and the state forgets everything each step; tiny Δ: nearly no input."""
    p = make_problem(length=40, state=16, groups=2, delta_softplus=False, with_delta_bias=False)
    with torch.no_grad():
        p.delta.fill_(delta_scale)
        p.A.copy_(-torch.arange(1, 17, dtype=torch.float32).expand(8, 16))  # S4D-real: decays down to e^-800
    assert_matches_ref(p, tolerance=TOLERANCE)
    out = p.run(cpu_scan)[0]
    assert torch.isfinite(out).all()


def test_softplus_of_extreme_raw_delta_is_finite(cpu_kernel):
    p = make_problem(length=30, groups=2)
    with torch.no_grad():
        p.delta[:, :4].fill_(-60.0)  # softplus -> ~1e-26
        p.delta[:, 4:].fill_(60.0)  # softplus -> 60
    assert_matches_ref(p)


def test_long_sequence_forward_and_backward_stay_finite(cpu_kernel):
    p = make_problem(batch=1, dim=2, length=16384, state=16, groups=None)
    with torch.no_grad():
        expected = p.run(selective_scan_ref)
    out, last = p.run(cpu_scan)
    assert relative_error(out.detach(), expected[0]) <= TOLERANCE
    assert relative_error(last.detach(), expected[1]) <= TOLERANCE
    (out.sum() + last.sum()).backward()
    for name, tensor in zip(p.names(), p.tensors()):
        assert torch.isfinite(tensor.grad).all(), name


def test_autocast_bfloat16_runs_in_float32_and_returns_u_dtype(cpu_kernel):
    p = make_problem(length=32, groups=2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, last = p.run(cpu_scan)
        loss = out.float().sum() + last.sum()
    loss.backward()
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    with torch.no_grad():  # the same bf16 values, computed in float32 by the reference
        expected = p.run(selective_scan_ref)[0]
    assert relative_error(out.detach(), expected) < 1e-2
    for name, tensor in zip(p.names(), p.tensors()):
        assert tensor.grad.dtype == torch.bfloat16 and torch.isfinite(tensor.grad.float()).all(), name


def test_autocast_layer_output_feeds_the_scan_and_backpropagates(cpu_kernel):
    linear = torch.nn.Linear(8, 8)
    p = make_problem(length=16, groups=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u = linear(p.u.transpose(1, 2)).transpose(1, 2)  # autocast makes this bfloat16
        out = selective_scan(u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, delta_softplus=True, backend="cpu")
    assert u.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert torch.isfinite(linear.weight.grad).all() and linear.weight.grad.dtype == torch.float32


def test_non_contiguous_inputs(cpu_kernel):
    p = make_problem(length=24, groups=2, requires_grad=False)
    u_t = p.u.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    B_wide = torch.cat([p.B, p.B], dim=-1)[..., ::2]  # strided last axis... different values, so build the ref on it
    args = dict(D=p.D, z=p.z, delta_bias=p.delta_bias, delta_softplus=True)
    expected = selective_scan_ref(p.u, p.delta, p.A, B_wide.contiguous(), p.C, **args)
    actual = selective_scan(u_t, p.delta, p.A, B_wide, p.C, backend="cpu", **args)
    assert relative_error(actual, expected) <= TOLERANCE


def test_threads_do_not_change_the_result(cpu_kernel):
    p = make_problem(batch=3, dim=8, length=40, state=4, groups=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = outputs_and_grads(p, cpu_scan)
        torch.set_num_threads(max(2, threads))
        multi = outputs_and_grads(p, cpu_scan)
    finally:
        torch.set_num_threads(threads)
    for name in single:
        assert relative_error(multi[name], single[name]) <= 1e-6, name


def test_batch_one_uses_channel_blocks_for_the_grouped_reduction(cpu_kernel):
    # batch 1 with one group: the backward splits the group's channels over units and sums their dB/dC slabs
    assert_matches_ref(make_problem(batch=1, dim=32, length=20, state=4, groups=None))
