"""Directional scans of a token grid: the in-place CPU kernel against the reordering reference, outputs and the
gradient of every input, for every direction, odd grids, several groups, float32 / bfloat16 / float64."""

from __future__ import annotations

import pytest
import torch

from scan_problems import relative_error
from ssmamba.ops import (
    BACKEND_ENV,
    ScanDirection,
    directional_scan,
    directional_scan_ref,
    scan_order,
    selective_scan_ref,
)

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float64: 1e-12}  # norm-relative
FOUR = ("row", "row_reverse", "column", "column_reverse")


def make_grid_problem(batch=2, channels=12, directions=FOUR, groups=1, state=5, height=5, width=7,
                      dtype=torch.float32, with_D=True, with_delta_bias=True, seed=0) -> dict:  # fmt: skip
    """Inputs of a DMS-like directional scan: u shared by the directions, per-direction Δ, A, B, C, D, bias.
    u, delta, B, C in `dtype`; A, D, delta_bias in float32 (float64 for float64), like the mixer's parameters."""
    g = torch.Generator().manual_seed(seed)
    k, length = len(directions), height * width
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape, scale=1.0, shift=0.0, to=dtype):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(to).requires_grad_()

    return dict(
        u=randn(batch, channels, length),
        delta=randn(batch, k, channels, length, scale=0.5, shift=-2.0),
        A=(-torch.exp(torch.randn(k, channels, state, generator=g, dtype=torch.float64) * 0.5)).to(param_dtype)
        .requires_grad_(),
        B=randn(batch, k * groups, state, length),
        C=randn(batch, k * groups, state, length),
        D=randn(k, channels, to=param_dtype) if with_D else None,
        delta_bias=randn(k, channels, scale=0.1, to=param_dtype) if with_delta_bias else None,
    ) | dict(directions=directions, height=height, width=width)


def run_with_grads(problem: dict, backend: str, delta_softplus: bool = True, seed: int = 1) -> dict:
    out = directional_scan(**problem, delta_softplus=delta_softplus, backend=backend)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.device)
    names = [n for n in ("u", "delta", "A", "B", "C", "D", "delta_bias") if problem[n] is not None]
    grads = torch.autograd.grad((out.double() * weights).sum(), [problem[n] for n in names])
    return {"out": out.detach()} | {f"d{n}": grad for n, grad in zip(names, grads)}


def assert_matches_ref(problem: dict, tolerance: float | None = None, **kwargs) -> None:
    tolerance = tolerance or TOLERANCE[problem["u"].dtype]
    expected = run_with_grads(problem, "ref", **kwargs)
    actual = run_with_grads(problem, "cpu", **kwargs)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert actual[name].shape == expected[name].shape and actual[name].dtype == expected[name].dtype, name
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    assert max(errors.values()) <= tolerance, errors


@pytest.mark.parametrize("direction", list(ScanDirection))
def test_every_direction_matches_ref(cpu_kernel, direction):
    assert_matches_ref(make_grid_problem(directions=(direction,), height=9, width=15))


@pytest.mark.parametrize("height, width, state", [(16, 16, 3), (17, 17, 3), (23, 25, 3), (23, 25, 16)])
def test_long_grids_recomputed_in_chunks_match_ref(cpu_kernel, height, width, state):
    # the backward recomputes 256 steps at a time: one whole chunk, two (the last one partial), three. At N = 16 the
    # (G, L, N) per-lane packs of dB and dC outgrow their budget (kLaneSlabBytes) and lanes are summed every step
    problem = make_grid_problem(batch=1, channels=3, directions=("column_reverse", "row"), state=state, height=height,
                                width=width)  # fmt: skip
    assert_matches_ref(problem)


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("height, width", [(5, 7), (1, 9), (7, 1), (1, 1)])
def test_four_directions_several_groups_odd_grids(cpu_kernel, groups, height, width):
    assert_matches_ref(make_grid_problem(groups=groups, height=height, width=width))


@pytest.mark.parametrize("channels", [1, 8, 20])  # one lane, one whole pack, two packs and a partial one
def test_channel_counts_around_the_simd_width(cpu_kernel, channels):
    assert_matches_ref(make_grid_problem(channels=channels, directions=FOUR + ("diagonal",), state=16))


@pytest.mark.parametrize(
    "options",
    [dict(with_D=False), dict(with_delta_bias=False), dict(with_D=False, with_delta_bias=False)],
    ids=["no-D", "no-bias", "bare"],
)
@pytest.mark.parametrize("delta_softplus", [True, False])
def test_options_match_ref(cpu_kernel, options, delta_softplus):
    problem = make_grid_problem(**options)
    if not delta_softplus:  # Δ used as is: keep it positive
        with torch.no_grad():
            problem["delta"].abs_().mul_(0.1)
    assert_matches_ref(problem, delta_softplus=delta_softplus)


def test_bfloat16_inputs_are_read_as_bfloat16_and_match_ref(cpu_kernel):
    problem = make_grid_problem(dtype=torch.bfloat16, height=9, width=11, state=16, channels=16)
    assert_matches_ref(problem)
    out = directional_scan(**problem, delta_softplus=True, backend="cpu")
    assert out.dtype == torch.bfloat16


def test_float64_matches_ref_closely_and_passes_gradcheck(cpu_kernel):
    assert_matches_ref(make_grid_problem(dtype=torch.float64))
    p = make_grid_problem(batch=1, channels=3, directions=("row", "column_reverse"), groups=1, state=2, height=3,
                          width=2, dtype=torch.float64)  # fmt: skip
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]

    def scan(*tensors):
        return directional_scan(*tensors, delta_softplus=True, directions=p["directions"], height=3, width=2,
                                backend="cpu")  # fmt: skip

    assert torch.autograd.gradcheck(scan, [p[n] for n in names], eps=1e-6, atol=1e-7, rtol=1e-5)


def test_channels_last_inputs_are_read_in_place_and_the_output_keeps_their_layout(cpu_kernel):
    p = make_grid_problem(channels=16, state=16)
    b, e, length = p["u"].shape
    k = len(FOUR)
    with torch.no_grad():  # the same values in DMS's layouts: token-major u, delta and one (B, L, K, 2N) tensor
        u_tokens = p["u"].transpose(1, 2).contiguous().transpose(1, 2)
        delta_tokens = p["delta"].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
        BC = torch.cat([p["B"], p["C"]], dim=2).permute(0, 3, 1, 2).contiguous()  # (B, L, K, 2N)
        B_view, C_view = BC[..., :16].permute(0, 2, 3, 1), BC[..., 16:].permute(0, 2, 3, 1)
    assert u_tokens.stride(1) == 1 and delta_tokens.stride(2) == 1 and B_view.stride(2) == 1
    strided = p | dict(u=u_tokens, delta=delta_tokens, B=B_view, C=C_view)
    out = directional_scan(**strided, delta_softplus=True, backend="cpu")
    assert out.stride() == u_tokens.stride()
    expected = directional_scan(**p, delta_softplus=True, backend="cpu")
    assert relative_error(out.detach(), expected.detach()) <= 1e-6
    assert (b, e, length, k) == (2, 16, 35, 4)


def test_one_row_direction_is_the_plain_selective_scan(cpu_kernel):
    p = make_grid_problem(directions=("row",), groups=2)
    out = directional_scan(**p, delta_softplus=True, backend="cpu")
    plain = selective_scan_ref(p["u"], p["delta"][:, 0], p["A"][0], p["B"], p["C"], p["D"][0],
                               delta_bias=p["delta_bias"][0], delta_softplus=True)  # fmt: skip
    assert relative_error(out.detach(), plain.detach()) <= TOLERANCE[torch.float32]


def test_reverse_directions_read_the_grid_backwards():
    # the reference's own semantics: a reverse scan equals the forward scan of the flipped grid, flipped back
    p = make_grid_problem(directions=("row_reverse",), with_D=False)
    reverse = directional_scan_ref(**p, delta_softplus=True)
    flipped = {n: p[n].flip(-1) for n in ("u", "delta", "B", "C")}
    forward = directional_scan_ref(**(p | flipped | dict(directions=("row",))), delta_softplus=True)
    assert relative_error(reverse, forward.flip(-1)) <= 1e-6
    assert torch.equal(scan_order("row_reverse", 5, 7), torch.arange(34, -1, -1))


def test_threads_do_not_change_the_result(cpu_kernel):
    p = make_grid_problem(batch=3, channels=20)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run_with_grads(p, "cpu")
        torch.set_num_threads(max(2, threads))
        multi = run_with_grads(p, "cpu")
    finally:
        torch.set_num_threads(threads)
    for name in single:
        assert relative_error(multi[name], single[name]) <= 1e-6, name


def test_auto_picks_the_kernel_and_the_environment_forces_ref(cpu_kernel, monkeypatch):
    p = make_grid_problem()
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    with torch.no_grad():
        auto = directional_scan(**p, delta_softplus=True)
        assert torch.isfinite(auto).all()
        assert torch.equal(auto, directional_scan(**p, delta_softplus=True, backend="cpu"))
        monkeypatch.setenv(BACKEND_ENV, "ref")
        assert torch.equal(directional_scan(**p, delta_softplus=True), directional_scan(**p, delta_softplus=True,
                                                                                        backend="ref"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(delta="drop-direction"), "`delta` must have shape"),
        (dict(directions=("row", "sideways", "column", "column_reverse")), "sideways"),
        (dict(height=6), "`u` must have shape"),
        (dict(D="wrong"), "`D` must have shape"),
    ],
)
def test_bad_inputs_name_the_argument(change, message):
    p = make_grid_problem()
    if change.get("delta") == "drop-direction":
        change = dict(delta=p["delta"][:, :3])
    if change.get("D") == "wrong":
        change = dict(D=p["D"].flatten())
    with pytest.raises(ValueError, match=message):
        directional_scan(**(p | change), backend="ref")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "height, width, groups, delta_softplus",
    # 289 steps: the backward's checkpoint pass, 2 chunks, and per-lane dB, dC past their budget (summed every step)
    [(7, 5, 1, True), (7, 5, 3, False), (17, 17, 2, True)],
)
def test_scalar_decay_per_channel_matches_ref(cpu_kernel, dtype, height, width, groups, delta_softplus):
    # A (K, E, 1): one exp(Δ a) per step shared by the channel's N states (Mamba-2's scalar A); the kernel has its
    # own code for it (one decay per step, the N states' terms of dΔ and dA summed before the decay)
    p = make_grid_problem(dtype=dtype, state=16, channels=12, groups=groups, height=height, width=width)
    p["A"] = p["A"][..., :1].detach().clone().requires_grad_()
    if not delta_softplus:  # Δ used as is: keep it positive
        with torch.no_grad():
            p["delta"].abs_().mul_(0.1)
    assert_matches_ref(p, delta_softplus=delta_softplus)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("directions, groups, state, scalar", [
    (FOUR, 1, 16, False), (("row", "row_reverse"), 1, 16, True), (("diagonal", "column"), 2, 5, False)])
def test_cuda_in_place_triton_kernel_matches_ref(monkeypatch, dtype, directions, groups, state, scalar):
    """The compiled Triton directional kernel (the cuda path without mamba_ssm) on a DMS-sized grid (14 x 14,
    192 channels: several channel blocks and checkpoint chunks), against the reference on CPU."""
    pytest.importorskip("triton")
    from ssmamba.ops import scan_cuda

    monkeypatch.setattr(scan_cuda, "mamba_ssm_scan", lambda: (None, "disabled by the test"))
    problem = make_grid_problem(batch=2, channels=192, directions=directions, groups=groups, state=state, height=14,
                                width=14, dtype=dtype)  # fmt: skip
    if scalar:
        problem["A"] = problem["A"][..., :1].detach().requires_grad_()
    on_gpu = {name: value.detach().cuda().requires_grad_() if isinstance(value, torch.Tensor) else value
              for name, value in problem.items()}  # fmt: skip
    expected = run_with_grads(problem, "ref")
    actual = run_with_grads(on_gpu, "cuda")
    errors = {name: relative_error(actual[name].cpu(), expected[name]) for name in expected}
    assert max(errors.values()) <= TOLERANCE[dtype], errors
