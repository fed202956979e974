"""Directional scan (DMS) as two Triton kernels that read the token grid in place: the CUDA path without mamba_ssm.

The same contract as ``directional.directional_scan_ref``: K selective scans of one grid, direction k reading token
``orders[k, t]`` at step t, with Δ = softplus(delta + delta_bias), the D skip term, and the K outputs summed at the
token they belong to. Where ``directional_scan_reordered`` gathers each direction's sequences into new tensors, runs
the bias, softplus and D around a plain scan as separate PyTorch ops and scatters the result back, these kernels
take u, delta, B and C with their strides and walk each direction's order directly. With channels-last tokens (the
layout the DMS mixer makes, channels at stride 1) every step loads a block of channels contiguously: coalesced on a
GPU, where the plain kernels of ``scan_triton`` read one channel per lane at a stride of L.

One program owns a block of channels of one (batch, direction) and keeps its state (BLOCK_D, N) in registers. The
forward stores the state at the start of every ``CHUNK`` steps and each direction's output in a (B, K, L, E) buffer
that is summed over K afterwards (no atomics: the sum's order is fixed). The backward goes over the chunks last to
first, recomputes a chunk's states from its checkpoint into program-private scratch, then runs the adjoint
recurrence through it (the equations are those of ``scan_triton``, plus softplus' and D's terms). Sums over channel
blocks (dB, dC) and over the batch (dA, dD, d delta_bias) are written per program and reduced in PyTorch. A block
of channels never straddles two groups of B and C. Computes in float32 from float32 or bfloat16 storage; outputs and
gradients come back in their inputs' dtypes. ``TRITON_INTERPRET=1`` runs the kernels on CPU tensors (the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmamba.ops.directional import check_directional_inputs, direction_orders

__all__ = ["directional_scan_triton"]

CHUNK = 64  # steps between forward checkpoints: the backward recomputes at most this many states at a time


@triton.jit
def _softplus(x):
    # as torch's softplus (threshold 20); log(1 + e^x) loses e^x below about -15, where e^x itself is the value
    return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))


@triton.jit
def _step_inputs(u_row, dl_row, B_row, order_ptr, bias, k, t, L, su2, sd3, sB3, md, mn,
                 SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):  # fmt: skip
    """Token index l of step t, and u, Δ (0 past the end, so the state stays), the raw delta and B at it."""
    live = t < L
    l = tl.load(order_ptr + k * L + t, mask=live, other=0)
    u = tl.load(u_row + l * su2, mask=md & live, other=0.0).to(tl.float32)
    raw = tl.load(dl_row + l * sd3, mask=md & live, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    dt = _softplus(raw) if SOFTPLUS else raw
    dt = tl.where(md & live, dt, 0.0)
    Bv = tl.load(B_row + l * sB3, mask=mn & live, other=0.0).to(tl.float32)
    return l, live, u, raw, dt, Bv


@triton.jit
def _block(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, su0, su1, sd0, sd1, sd2, sB0, sB1, sB2, sC0, sC1,
           sC2, sAk, sAe, sAn, K, M, E, N,
           HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """This program's (batch, direction) and channel block: its lanes, masks, parameters and input rows."""
    bk = tl.program_id(0).to(tl.int64)  # (batch, direction)
    b, k = bk // K, bk % K
    first = tl.program_id(1) * BLOCK_D
    d = first + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    md, mn = d < E, n < N
    mdn = md[:, None] & mn[None, :]
    g = k * M + first // (E // M)  # the block's group of B and C
    A = tl.load(A_ptr + k * sAk + d[:, None] * sAe + n[None, :] * sAn, mask=mdn, other=0.0).to(tl.float32)
    Dv = tl.load(D_ptr + k * E + d, mask=md, other=0.0).to(tl.float32) if HAS_D else tl.zeros((BLOCK_D,), tl.float32)
    bias = tl.load(bias_ptr + k * E + d, mask=md, other=0.0).to(tl.float32) if HAS_BIAS else 0.0
    u_row = u_ptr + b * su0 + d * su1
    dl_row = dl_ptr + b * sd0 + k * sd1 + d * sd2
    B_row = B_ptr + b * sB0 + g * sB1 + n * sB2
    C_row = C_ptr + b * sC0 + g * sC1 + n * sC2
    return bk, b, k, d, n, md, mn, mdn, A, Dv, bias, u_row, dl_row, B_row, C_row


@triton.jit
def _directional_forward_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, order_ptr,  # inputs
    y_ptr, ckpt_ptr,  # outputs: per-direction y (B·K, L, E), checkpoints (B·K, NC, E, N)
    su0, su1, su2, sd0, sd1, sd2, sd3, sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, sAk, sAe, sAn,
    K, M, E, L, N, NC,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    bk, b, k, d, n, md, mn, mdn, A, Dv, bias, u_row, dl_row, B_row, C_row = _block(
        u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, su0, su1, sd0, sd1, sd2, sB0, sB1, sB2, sC0, sC1, sC2,
        sAk, sAe, sAn, K, M, E, N, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)  # fmt: skip
    y_row = y_ptr + bk * L * E + d
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(NC):
        tl.store(ckpt_ptr + (bk * NC + c) * E * N + d[:, None] * N + n[None, :], h, mask=mdn)
        for i in range(CHUNK):
            l, live, u, raw, dt, Bv = _step_inputs(u_row, dl_row, B_row, order_ptr, bias, k, c * CHUNK + i, L,
                                                   su2, sd3, sB3, md, mn, SOFTPLUS, HAS_BIAS)  # fmt: skip
            Cv = tl.load(C_row + l * sC3, mask=mn & live, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bv[None, :]
            tl.store(y_row + l * E, tl.sum(h * Cv[None, :], axis=1) + Dv * u, mask=md & live)


@triton.jit
def _directional_backward_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, order_ptr, ckpt_ptr, dy_ptr,  # inputs
    du_ptr, ddl_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,  # outputs (see _DirectionalScanTriton.backward)
    work_ptr,  # (B·K, ND, CHUNK + 1, BLOCK_D, BLOCK_N) scratch: one chunk's states, slot 0 = the state before it
    su0, su1, su2, sd0, sd1, sd2, sd3, sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, sAk, sAe, sAn, sy0, sy1, sy2,
    K, M, E, L, N, NC, ND,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    bk, b, k, d, n, md, mn, mdn, A, Dv, bias, u_row, dl_row, B_row, C_row = _block(
        u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, su0, su1, sd0, sd1, sd2, sB0, sB1, sB2, sC0, sC1, sC2,
        sAk, sAe, sAn, K, M, E, N, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)  # fmt: skip
    pd = tl.program_id(1)
    dy_row = dy_ptr + b * sy0 + d * sy1
    part = (bk * ND + pd) * L * N + n  # this program's row of the dB, dC partials (B·K·ND, L, N)
    slot = BLOCK_D * BLOCK_N
    work = work_ptr + (bk * ND + pd) * (CHUNK + 1) * slot
    local = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]

    grad_h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # ∂L/∂h after the step being undone
    dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(NC):
        c = NC - 1 - i
        h = tl.load(ckpt_ptr + (bk * NC + c) * E * N + d[:, None] * N + n[None, :], mask=mdn, other=0.0)
        tl.store(work + local, h)
        for s in range(CHUNK):  # this chunk's states again
            l, live, u, raw, dt, Bv = _step_inputs(u_row, dl_row, B_row, order_ptr, bias, k, c * CHUNK + s, L,
                                                   su2, sd3, sB3, md, mn, SOFTPLUS, HAS_BIAS)  # fmt: skip
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bv[None, :]
            tl.store(work + (s + 1) * slot + local, h)
        tl.debug_barrier()  # the states written above are read below by other threads of this program
        for j in range(CHUNK):  # adjoint recurrence, last step of the chunk first
            s = CHUNK - 1 - j
            l, live, u, raw, dt, Bv = _step_inputs(u_row, dl_row, B_row, order_ptr, bias, k, c * CHUNK + s, L,
                                                   su2, sd3, sB3, md, mn, SOFTPLUS, HAS_BIAS)  # fmt: skip
            Cv = tl.load(C_row + l * sC3, mask=mn & live, other=0.0).to(tl.float32)
            dy = tl.load(dy_row + l * sy2, mask=md & live, other=0.0).to(tl.float32)
            h_t = tl.load(work + (s + 1) * slot + local)
            h_prev = tl.load(work + s * slot + local)
            grad_h = grad_h + dy[:, None] * Cv[None, :]  # now ∂L/∂h_t in full
            tl.store(dC_ptr + part + l * N, tl.sum(dy[:, None] * h_t, axis=0), mask=mn & live)
            tl.store(dB_ptr + part + l * N, tl.sum(grad_h * (dt * u)[:, None], axis=0), mask=mn & live)
            decay = tl.exp(dt[:, None] * A)
            through = grad_h * h_prev * decay  # ∂L/∂(Δ_t A), elementwise
            dA += through * dt[:, None]
            gB = tl.sum(grad_h * Bv[None, :], axis=1)
            tl.store(du_ptr + (bk * L + l) * E + d, gB * dt + dy * Dv, mask=md & live)
            d_dt = tl.sum(through * A, axis=1) + gB * u
            d_raw = d_dt * tl.sigmoid(raw) if SOFTPLUS else d_dt
            d_raw = tl.where(md & live, d_raw, 0.0)
            tl.store(ddl_ptr + (bk * L + l) * E + d, d_raw, mask=md & live)
            dD += dy * u
            dbias += d_raw
            grad_h = grad_h * decay  # ∂L/∂h_{t-1} through the recurrence
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dA_ptr + bk * E * N + d[:, None] * N + n[None, :], dA, mask=mdn)
    tl.store(dD_ptr + bk * E + d, dD, mask=md)
    tl.store(dbias_ptr + bk * E + d, dbias, mask=md)


def _launch_shape(group_channels: int, state: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): about 512 state entries per program, a block that divides a group's channels."""
    block_n = triton.next_power_of_2(state)
    block_d = min(triton.next_power_of_2(group_channels), max(1, 512 // block_n))
    while group_channels % block_d:  # a block never straddles two groups
        block_d //= 2
    return block_d, block_n


def _a_strides(A: torch.Tensor) -> tuple[int, int, int]:
    return A.stride(0), A.stride(1), 0 if A.shape[2] == 1 else A.stride(2)  # scalar A: every state reads it


class _DirectionalScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, orders, delta_softplus: bool):
        batch, channels, length = u.shape
        k, state, groups = delta.shape[1], B.shape[2], B.shape[1] // delta.shape[1]
        block_d, block_n = _launch_shape(channels // groups, state)
        n_chunks = triton.cdiv(length, CHUNK)
        y = u.new_empty(batch * k, length, channels, dtype=torch.float32)
        checkpoints = u.new_empty(batch * k, n_chunks, channels, state, dtype=torch.float32)
        D_, bias_ = (u if t is None else t.contiguous() for t in (D, delta_bias))  # u: a pointer never read
        _directional_forward_kernel[(batch * k, triton.cdiv(channels, block_d))](
            u, delta, A, B, C, D_, bias_, orders, y, checkpoints,
            *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *_a_strides(A),
            k, groups, channels, length, state, n_chunks,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, orders, checkpoints)
        ctx.delta_softplus = delta_softplus
        # Σ_k, as (batch, E, L) with channels at stride 1 (u's layout in the DMS mixer)
        return y.view(batch, k, length, channels).sum(1).transpose(1, 2).to(u.dtype)

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, orders, checkpoints = ctx.saved_tensors
        batch, channels, length = u.shape
        k, state, groups = delta.shape[1], B.shape[2], B.shape[1] // delta.shape[1]
        block_d, block_n = _launch_shape(channels // groups, state)
        n_chunks, n_blocks = checkpoints.shape[1], triton.cdiv(channels, block_d)
        f32 = dict(dtype=torch.float32)
        du = u.new_empty(batch * k, length, channels, **f32)
        ddelta = u.new_empty(batch * k, length, channels, **f32)
        dA = u.new_empty(batch * k, channels, state, **f32)
        dB = u.new_zeros(batch * k * n_blocks, length, state, **f32)
        dC = u.new_zeros(batch * k * n_blocks, length, state, **f32)
        dD = u.new_empty(batch * k, channels, **f32)
        dbias = u.new_empty(batch * k, channels, **f32)
        work = u.new_empty(batch * k * n_blocks, CHUNK + 1, block_d, block_n, **f32)
        D_, bias_ = (u if t is None else t.contiguous() for t in (D, delta_bias))  # u: a pointer never read
        _directional_backward_kernel[(batch * k, n_blocks)](
            u, delta, A, B, C, D_, bias_, orders, checkpoints, dy,
            du, ddelta, dA, dB, dC, dD, dbias, work,
            *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *_a_strides(A), *dy.stride(),
            k, groups, channels, length, state, n_chunks, n_blocks,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.delta_softplus,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        # each block of channels lies in one group: the blocks of group m of direction k are m·(blocks per group) ...
        per_group = (batch, k * groups, n_blocks // groups, length, state)
        dB_, dC_ = (t.view(per_group).sum(2).transpose(2, 3) for t in (dB, dC))  # (batch, K·M, N, L)
        dA_ = dA.view(batch, k, channels, state).sum(0)
        if A.shape[2] == 1:
            dA_ = dA_.sum(2, keepdim=True)
        as_tokens = (batch, k, length, channels)
        return (
            du.view(as_tokens).sum(1).transpose(1, 2).to(u.dtype),
            ddelta.view(as_tokens).transpose(2, 3).to(delta.dtype),
            dA_.to(A.dtype), dB_.to(B.dtype), dC_.to(C.dtype),
            None if D is None else dD.view(batch, k, channels).sum(0).to(D.dtype),
            None if delta_bias is None else dbias.view(batch, k, channels).sum(0).to(delta_bias.dtype),
            None, None,
        )  # fmt: skip


def directional_scan_triton(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = False, *,
                            directions, height: int, width: int) -> torch.Tensor:  # fmt: skip
    """Directional scan with the Triton kernels; same contract as `directional_scan_ref`. float32 or bfloat16 u,
    delta, B, C (any strides; channels at stride 1 is the fast layout), computed in float32; the output has u's
    dtype, with channels at stride 1."""
    check_directional_inputs(u, delta, A, B, C, D, delta_bias, directions, height, width)
    orders = direction_orders(directions, height, width, u.device)  # (K, L), contiguous
    return _DirectionalScanTriton.apply(u, delta, A, B, C, D, delta_bias, orders, bool(delta_softplus))
