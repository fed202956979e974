"""Selective-scan recurrence as two Triton kernels (forward, backward): the CUDA path when mamba_ssm is absent.

It replaces ``scan_ref.scan_steps`` (same signature, so ``run_scan`` adds bias, softplus, D and the z gate around it
in PyTorch). One program owns a block of channels of one (batch, group) and walks the whole sequence with its state
(BLOCK_D, N) in registers: no (batch, dim, L, N) tensor is ever stored. The forward writes the state at the start of
every `CHUNK` steps; the backward goes over the chunks last to first, recomputes a chunk's states into a small
program-private buffer from that checkpoint, then runs the adjoint recurrence back through it::

    forward:   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t          y_t = C_t · h_t
    backward:  g_t = ∂L/∂h_t = dy_t C_t + exp(Δ_{t+1} A) ⊙ g_{t+1}
               ∂L/∂C_t = Σ_d dy_t h_t      ∂L/∂B_t = Σ_d g_t Δ_t u_t      ∂L/∂u_t = Δ_t (g_t · B_t)
               ∂L/∂Δ_t = Σ_n g_t ⊙ h_{t-1} ⊙ exp(Δ_t A) ⊙ A + u_t (g_t · B_t)
               ∂L/∂A = Σ_t g_t ⊙ h_{t-1} ⊙ exp(Δ_t A) Δ_t

Sums over channels (∂B, ∂C) and over the batch (∂A) are written per program and reduced in PyTorch, so results do
not depend on scheduling. With ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on CPU
tensors; the tests check them that way against the reference on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 64  # steps between forward checkpoints: the backward recomputes at most this many states at a time


@triton.jit
def _scan_forward_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, h0_ptr,  # inputs
    y_ptr, hT_ptr, ckpt_ptr,  # outputs
    T, Dg, N, G, NC,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    bg = tl.program_id(0).to(tl.int64)  # (batch, group) index
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = d < Dg, n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * N + n[None, :]
    seq_d = bg * Dg * T + d * T  # row starts in u, Δ, y: (BG, Dg, T)
    seq_n = bg * N * T + n * T  # row starts in B, C: (BG, N, T)

    A = tl.load(A_ptr + (bg % G) * Dg * N + dn, mask=mask_dn, other=0.0)
    h = tl.load(h0_ptr + bg * Dg * N + dn, mask=mask_dn, other=0.0)
    for c in range(NC):
        tl.store(ckpt_ptr + (bg * NC + c) * Dg * N + dn, h, mask=mask_dn)
        for k in range(CHUNK):
            t = c * CHUNK + k
            live = t < T  # past the end Δ = 0 and u = 0 load, so h stays as it is
            u = tl.load(u_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            dt = tl.load(dt_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            B = tl.load(B_ptr + seq_n + t, mask=mask_n & live, other=0.0)
            C = tl.load(C_ptr + seq_n + t, mask=mask_n & live, other=0.0)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B[None, :]
            tl.store(y_ptr + seq_d + t, tl.sum(h * C[None, :], axis=1), mask=mask_d & live)
    tl.store(hT_ptr + bg * Dg * N + dn, h, mask=mask_dn)


@triton.jit
def _scan_backward_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, ckpt_ptr, dy_ptr, dhT_ptr,  # inputs
    du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dh0_ptr,  # outputs (dA, dB, dC per program, reduced by the caller)
    work_ptr,  # (BG, ND, CHUNK + 1, BLOCK_D, BLOCK_N) scratch: one chunk's states, slot 0 = the state before it
    T, Dg, N, G, NC, ND,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    bg = tl.program_id(0).to(tl.int64)
    pd = tl.program_id(1)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = d < Dg, n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * N + n[None, :]
    seq_d = bg * Dg * T + d * T
    seq_n = bg * N * T + n * T
    part_n = ((bg * ND + pd) * N + n) * T  # row starts in the per-program dB, dC: (BG, ND, N, T)
    slot = BLOCK_D * BLOCK_N
    work = work_ptr + (bg * ND + pd) * (CHUNK + 1) * slot
    local = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]

    A = tl.load(A_ptr + (bg % G) * Dg * N + dn, mask=mask_dn, other=0.0)
    g = tl.load(dhT_ptr + bg * Dg * N + dn, mask=mask_dn, other=0.0)  # ∂L/∂h after the last step
    dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for i in range(NC):
        c = NC - 1 - i
        # recompute this chunk's states from its checkpoint
        h = tl.load(ckpt_ptr + (bg * NC + c) * Dg * N + dn, mask=mask_dn, other=0.0)
        tl.store(work + local, h)
        for k in range(CHUNK):
            t = c * CHUNK + k
            live = t < T
            u = tl.load(u_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            dt = tl.load(dt_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            B = tl.load(B_ptr + seq_n + t, mask=mask_n & live, other=0.0)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B[None, :]
            tl.store(work + (k + 1) * slot + local, h)
        tl.debug_barrier()  # the states written above are read below by other threads of this program
        # adjoint recurrence, last step of the chunk first
        for j in range(CHUNK):
            k = CHUNK - 1 - j
            t = c * CHUNK + k
            live = t < T  # past the end dy = Δ = 0, so g passes through unchanged and nothing is stored
            h_t = tl.load(work + (k + 1) * slot + local)
            h_prev = tl.load(work + k * slot + local)
            u = tl.load(u_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            dt = tl.load(dt_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            dy = tl.load(dy_ptr + seq_d + t, mask=mask_d & live, other=0.0)
            B = tl.load(B_ptr + seq_n + t, mask=mask_n & live, other=0.0)
            C = tl.load(C_ptr + seq_n + t, mask=mask_n & live, other=0.0)
            g = g + dy[:, None] * C[None, :]  # now ∂L/∂h_t in full
            tl.store(dC_ptr + part_n + t, tl.sum(dy[:, None] * h_t, axis=0), mask=mask_n & live)
            tl.store(dB_ptr + part_n + t, tl.sum(g * (dt * u)[:, None], axis=0), mask=mask_n & live)
            decay = tl.exp(dt[:, None] * A)
            g_decay = g * h_prev * decay  # ∂L/∂(Δ_t A), elementwise
            dA += g_decay * dt[:, None]
            gB = tl.sum(g * B[None, :], axis=1)
            tl.store(du_ptr + seq_d + t, gB * dt, mask=mask_d & live)
            tl.store(ddt_ptr + seq_d + t, tl.sum(g_decay * A, axis=1) + gB * u, mask=mask_d & live)
            g = g * decay  # ∂L/∂h_{t-1} through the recurrence
        tl.debug_barrier()  # the next chunk overwrites the buffer
    tl.store(dh0_ptr + bg * Dg * N + dn, g, mask=mask_dn)
    tl.store(dA_ptr + bg * Dg * N + dn, dA, mask=mask_dn)


def _launch_shape(channels: int, state: int) -> tuple[int, int]:
    block_n = triton.next_power_of_2(state)
    block_d = min(triton.next_power_of_2(channels), max(1, 512 // block_n))  # about 512 state entries per program
    return block_d, block_n


class _TritonScanSteps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0, u, delta, A, B, C):
        batch, groups, channels, length = u.shape
        state = A.shape[-1]
        bg = batch * groups
        u_, dt_ = (x.float().contiguous().view(bg, channels, length) for x in (u, delta))
        B_, C_ = (x.float().contiguous().view(bg, state, length) for x in (B, C))
        A_ = A.float().contiguous()
        h0_ = h0.float().contiguous().view(bg, channels, state)
        n_chunks = triton.cdiv(length, CHUNK)
        block_d, block_n = _launch_shape(channels, state)
        y = torch.empty_like(u_)
        h_last = torch.empty_like(h0_)
        checkpoints = u_.new_empty(bg, n_chunks, channels, state)
        grid = (bg, triton.cdiv(channels, block_d))
        _scan_forward_kernel[grid](
            u_, dt_, A_, B_, C_, h0_, y, h_last, checkpoints,
            length, channels, state, groups, n_chunks,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        ctx.save_for_backward(u_, dt_, A_, B_, C_, checkpoints)
        ctx.shape = (batch, groups, channels, length, state)
        return y.view(batch, groups, channels, length), h_last.view(batch, groups, channels, state)

    @staticmethod
    def backward(ctx, dy, dh_last):
        u_, dt_, A_, B_, C_, checkpoints = ctx.saved_tensors
        batch, groups, channels, length, state = ctx.shape
        bg, n_chunks = batch * groups, checkpoints.shape[1]
        block_d, block_n = _launch_shape(channels, state)
        n_dblocks = triton.cdiv(channels, block_d)
        dy_ = torch.zeros_like(u_) if dy is None else dy.float().contiguous().view(bg, channels, length)
        dh_last_ = u_.new_zeros(bg, channels, state) if dh_last is None else dh_last.float().contiguous().view(
            bg, channels, state)  # fmt: skip
        du, ddt = torch.empty_like(u_), torch.empty_like(u_)
        dA_parts = u_.new_empty(bg, channels, state)
        dB_parts = u_.new_empty(bg, n_dblocks, state, length)
        dC_parts = u_.new_empty(bg, n_dblocks, state, length)
        dh0 = u_.new_empty(bg, channels, state)
        work = u_.new_empty(bg, n_dblocks, CHUNK + 1, block_d, block_n)
        _scan_backward_kernel[(bg, n_dblocks)](
            u_, dt_, A_, B_, C_, checkpoints, dy_, dh_last_,
            du, ddt, dA_parts, dB_parts, dC_parts, dh0, work,
            length, channels, state, groups, n_chunks, n_dblocks,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        as_input = (batch, groups, channels, length)
        return (
            dh0.view(batch, groups, channels, state),
            du.view(as_input),
            ddt.view(as_input),
            dA_parts.view(batch, groups, channels, state).sum(0),
            dB_parts.sum(1).view(batch, groups, state, length),
            dC_parts.sum(1).view(batch, groups, state, length),
        )


def triton_scan_steps(
    h: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for `scan_ref.scan_steps` over a whole sequence, in float32.

    Args:
        h: (batch, G, dim/G, N) state before the first step.
        u, delta: (batch, G, dim/G, L); delta already biased and softplus-ed.
        A: (G, dim/G, N).
        B, C: (batch, G, N, L).
    Returns:
        y: (batch, G, dim/G, L) = C_t · h_t, and the state after the last step (batch, G, dim/G, N).
    """
    return _TritonScanSteps.apply(h, u, delta, A, B, C)
