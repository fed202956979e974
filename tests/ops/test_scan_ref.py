"""The reference scan is the ground truth for every backend, so check it against the recurrence written out
element by element, and against identities that must hold."""

from __future__ import annotations

import collections

import math

import pytest
import torch
import torch.nn.functional as F

from ssmamba.ops import selective_scan_ref


def scan_by_hand(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """h[b,d,n] = exp(Δ A[d,n]) h + Δ B[b,g,n,t] u; y = Σ_n C h + D u; y *= silu(z): plain Python floats."""
    batch, dim, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    last = torch.zeros(batch, dim, state, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // groups)
            h = [0.0] * state
            for t in range(length):
                dt = delta[b, d, t].item() + delta_bias[d].item()
                dt = math.log1p(math.exp(dt)) if delta_softplus else dt
                x = u[b, d, t].item()
                y = 0.0
                for n in range(state):
                    h[n] = math.exp(dt * A[d, n].item()) * h[n] + dt * B[b, g, n, t].item() * x
                    y += C[b, g, n, t].item() * h[n]
                y += D[d].item() * x
                zt = z[b, d, t].item()
                out[b, d, t] = y * zt / (1 + math.exp(-zt))
            last[b, d] = torch.tensor(h, dtype=torch.float64)
    return out, last


@pytest.mark.parametrize("delta_softplus", [True, False])
def test_matches_recurrence_written_out(problem_factory, delta_softplus):
    p = problem_factory(batch=2, dim=4, length=5, state=3, groups=2, delta_softplus=delta_softplus,
                        dtype=torch.float64, requires_grad=False)  # fmt: skip
    out, last = p.run(selective_scan_ref)
    expected_out, expected_last = scan_by_hand(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, delta_softplus)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, expected_last, rtol=1e-12, atol=1e-12)


def test_single_step_closed_form(problem_factory):
    p = problem_factory(length=1, with_z=False, with_delta_bias=False, delta_softplus=False, requires_grad=False)
    out, last = p.run(selective_scan_ref)
    expected_last = p.delta[..., 0, None] * p.B[:, None, :, 0] * p.u[..., 0, None]  # h_0 = Δ B u
    torch.testing.assert_close(last, expected_last)
    torch.testing.assert_close(out[..., 0], (expected_last * p.C[:, None, :, 0]).sum(-1) + p.D * p.u[..., 0])


def test_grouped_equals_each_group_broadcast_to_its_channels(problem_factory):
    p = problem_factory(dim=6, groups=3, requires_grad=False)
    grouped = p.run(selective_scan_ref)[0]
    per_channel = []
    for d in range(6):  # channel d with B, C of group d // 2, as an ungrouped scan of one channel
        sl = slice(d, d + 1)
        per_channel.append(selective_scan_ref(
            p.u[:, sl], p.delta[:, sl], p.A[sl], p.B[:, d // 2], p.C[:, d // 2], p.D[sl], p.z[:, sl],
            p.delta_bias[sl], delta_softplus=True,
        ))  # fmt: skip
    torch.testing.assert_close(grouped, torch.cat(per_channel, dim=1))


def test_optional_inputs_are_their_neutral_values(problem_factory):
    p = problem_factory(with_D=False, with_z=False, with_delta_bias=False, requires_grad=False)
    bare = selective_scan_ref(p.u, p.delta, p.A, p.B, p.C, delta_softplus=True)
    explicit = selective_scan_ref(p.u, p.delta, p.A, p.B, p.C, D=torch.zeros(p.u.shape[1]), delta_bias=torch.zeros(
        p.u.shape[1]), delta_softplus=True)  # fmt: skip
    torch.testing.assert_close(bare, explicit)
    gated = selective_scan_ref(p.u, p.delta, p.A, p.B, p.C, z=torch.full_like(p.u, 30.0), delta_softplus=True)
    torch.testing.assert_close(gated, bare * F.silu(torch.tensor(30.0)))


def test_output_dtype_follows_u_and_low_precision_is_computed_in_float32(problem_factory):
    p = problem_factory(dtype=torch.bfloat16, requires_grad=False)
    out, last = p.run(selective_scan_ref)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    p64 = problem_factory(dtype=torch.float64, requires_grad=False)
    assert p64.run(selective_scan_ref)[0].dtype == torch.float64


def _graph_nodes(output: torch.Tensor) -> collections.Counter:
    """Autograd nodes behind ``output``, counted by type."""
    seen, stack, counts = set(), [output.grad_fn], collections.Counter()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] += 1
        stack.extend(child for child, _ in node.next_functions)
    return counts


def test_backward_is_linear_in_length(problem_factory):
    """Stepping with unbind, not indexing: the autograd graph grows by the same number of nodes per step, and no
    node reads one step out of the full sequence (the backward of such a select writes a full-length zero gradient,
    O(L) per step and O(L^2) in all: minutes at L = 2048)."""
    sizes = {}
    for length in (64, 128, 256):
        p = problem_factory(batch=1, dim=2, length=length, state=2)
        graph = _graph_nodes(p.run(selective_scan_ref)[0])
        assert not {"SelectBackward0", "SliceBackward0", "IndexBackward0"} & set(graph), graph
        sizes[length] = sum(graph.values())
    assert sizes[256] - sizes[128] == 2 * (sizes[128] - sizes[64])  # affine in L: a constant cost per step
    assert sizes[128] - sizes[64] <= 64 * 16
    p = problem_factory(batch=1, dim=2, length=2048, state=2)
    p.run(selective_scan_ref)[0].sum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in p.tensors())
