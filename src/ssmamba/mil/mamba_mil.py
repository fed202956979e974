"""Mamba-MIL: a bidirectional selective-scan head over tiles in Hilbert-curve order.

After MambaBack (Chai et al. 2026, same group as SSMamba): tiles are sorted along a Hilbert curve so that scan
neighbours are slide neighbours; each layer is a gated-CNN block (local context along the curve) followed by a
bidirectional Mamba block (global context, linear in the number of tiles, a forward and a backward scan with
their own parameters); gated attention pooling reads out the bag and gives per-tile scores for heatmaps.

``predict_bag`` streams a bag through the layers ``chunk_size`` tiles at a time: convolutions take a halo of
neighbouring tiles, and each scan carries its state from one chunk to the next, so the result equals the full
forward pass while the working memory is bounded by the chunk size.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn
from torch.nn import functional as F

from ssmamba.mil.base import GatedAttentionPool, MILHead, MILOutput, Standardise, StreamingAttentionPool
from ssmamba.mil.hilbert import hilbert_order
from ssmamba.mil.registry import register_mil_head
from ssmamba.ops import selective_scan


class TileOrder(enum.Enum):
    HILBERT = "hilbert"  # sort by Hilbert index of the coordinates (given order when coords are absent)
    GIVEN = "given"  # keep the order of the features file


class DirectionalScan(nn.Module):
    """One scan direction of a Mamba block: causal depthwise conv, input-dependent (Δ, B, C), selective scan.

    Args:
        d_inner: channels scanned.
        d_state: state size N per channel.
        d_conv: causal convolution width.
        dt_rank: rank of the Δ projection (default ceil(d_inner / 16), as in Mamba).
    """

    def __init__(self, d_inner: int, d_state: int = 16, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        super().__init__()
        self.d_state, self.d_conv = d_state, d_conv
        self.dt_rank = dt_rank or math.ceil(d_inner / 16)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)  # no padding: context is prepended
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        # Mamba's initialisation: Δ = softplus(bias) log-uniform in [dt_min, dt_max]; A = -(1..N) per channel.
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x: torch.Tensor, z: torch.Tensor, context: torch.Tensor | None = None,
                state: torch.Tensor | None = None, return_state: bool = False):
        """Scan a sequence, or one chunk of it.

        Args:
            x, z: (B, d_inner, L) scan input and gate.
            context: (B, d_inner, d_conv - 1) the inputs just before this chunk (None: sequence start).
            state: (B, d_inner, N) scan state after the previous chunk (None: zero state).
            return_state: also return the state and conv context after this chunk, to stream the next one.

        Returns:
            y (B, d_inner, L), or (y, state, context) when ``return_state``.
        """
        batch, channels, length = x.shape
        if context is None:
            context = x.new_zeros(batch, channels, self.d_conv - 1)
        padded = torch.cat([context, x], dim=-1)
        u = F.silu(self.conv(padded))  # (B, d_inner, L)
        dt, b, c = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2).contiguous()  # (B, d_inner, L); bias added in scan
        b, c = b.transpose(1, 2).contiguous(), c.transpose(1, 2).contiguous()  # (B, N, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, N), negative: the state decays
        scan_args = dict(D=self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        if state is None:
            result = selective_scan(u, delta, A, b, c, z=z, return_last_state=return_state, **scan_args)
            y, last = result if return_state else (result, None)
        else:
            # The scan starts from zero; the carried state h0 adds sum_n C_t[n] exp(A[n] S_t) h0[n] to each output,
            # with S_t the running sum of Δ: a linear term added before the gate. A < 0 and S >= 0, so exp <= 1.
            # One state index at a time keeps the extra memory at (B, d_inner, L) instead of (B, d_inner, N, L).
            y, last = selective_scan(u, delta, A, b, c, return_last_state=True, **scan_args)
            elapsed = torch.cumsum(F.softplus(delta + self.dt_proj.bias.float()[None, :, None]), dim=-1)  # (B,d,L)
            for n in range(self.d_state):
                y = y + c[:, n, None, :] * torch.exp(A[None, :, n, None] * elapsed) * state[:, :, n, None]
            y = y * F.silu(z)
            last = last + torch.exp(A[None] * elapsed[:, :, -1:]) * state
        if not return_state:
            return y
        return y, last, padded[..., padded.shape[-1] - (self.d_conv - 1):]


class BiMambaBlock(nn.Module):
    """Pre-norm residual block: shared input projection, forward and backward scans averaged, output projection."""

    def __init__(self, dim: int, expand: int = 2, d_state: int = 16, d_conv: int = 4) -> None:
        super().__init__()
        d_inner = expand * dim
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * d_inner)
        self.forward_scan = DirectionalScan(d_inner, d_state, d_conv)
        self.backward_scan = DirectionalScan(d_inner, d_state, d_conv)
        self.out_proj = nn.Linear(d_inner, dim)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, z = self.in_proj(self.norm(x)).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        return u.contiguous(), z.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) -> (B, L, dim)."""
        u, z = self._project(x)
        y_forward = self.forward_scan(u, z)
        y_backward = self.backward_scan(u.flip(-1), z.flip(-1)).flip(-1)
        return x + self.out_proj(((y_forward + y_backward) / 2).transpose(1, 2))

    def forward_streaming(self, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Same result as ``forward``, computed ``chunk_size`` positions at a time in each direction.

        out_proj is affine, so out_proj((y_f + y_b) / 2) = W y_f / 2 + W y_b / 2 + b is accumulated per chunk.
        """
        length = x.shape[1]
        out = x + self.out_proj.bias
        starts = list(range(0, length, chunk_size))
        for scan, chunk_starts, flip in ((self.forward_scan, starts, False), (self.backward_scan, starts[::-1], True)):
            state = context = None
            for start in chunk_starts:
                stop = min(start + chunk_size, length)
                u, z = self._project(x[:, start:stop])
                if flip:
                    u, z = u.flip(-1), z.flip(-1)
                y, state, context = scan(u, z, context, state, return_state=True)
                y = y.flip(-1) if flip else y
                out[:, start:stop] += F.linear(y.transpose(1, 2), self.out_proj.weight) / 2
        return out


class GatedConvBlock(nn.Module):
    """Pre-norm residual gated CNN: (GELU(gate) * DWConv(value)) along the sequence, then a projection."""

    def __init__(self, dim: int, expand: int = 2, kernel_size: int = 5) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred window), got {kernel_size}")
        hidden = expand * dim
        self.halo = kernel_size // 2
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel_size, padding=self.halo, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) -> (B, L, dim)."""
        gate, value = self.fc1(self.norm(x)).chunk(2, dim=-1)
        value = self.conv(value.transpose(1, 2)).transpose(1, 2)
        return x + self.fc2(F.gelu(gate) * value)

    def forward_streaming(self, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Same result as ``forward``: each chunk is computed with ``halo`` neighbours on both sides."""
        length, outputs = x.shape[1], []
        for start in range(0, length, chunk_size):
            stop = min(start + chunk_size, length)
            lo, hi = max(0, start - self.halo), min(length, stop + self.halo)
            outputs.append(self.forward(x[:, lo:hi])[:, start - lo:start - lo + stop - start])
        return torch.cat(outputs, dim=1)


@register_mil_head("mamba_mil")
class MambaMIL(MILHead):
    """Mamba-MIL head.

    Args:
        in_dim: instance embedding width D.
        num_classes: number of bag classes.
        dim: model width.
        depth: number of (gated-CNN, bidirectional Mamba) layer pairs.
        d_state: scan state size per channel.
        expand: inner width multiplier of both blocks.
        conv_kernel: window of the gated-CNN block along the tile sequence.
        dropout: dropout after the input projection and in the attention pooling.
        attention_dim: width of the gated attention pooling.
        order: tile order of the scan (Hilbert curve over ``coords`` by default).

    The residual branches are zero-initialised and the residual stream is pooled without a final LayerNorm, so
    the head starts out as gated attention-MIL and adds sequence context only where training finds it useful.
    With the usual initialisation (and a final norm) it memorised small training sets through the neighbourhoods
    of tiles along the curve, and stayed at chance on held-out bags of a task that ABMIL and TransMIL solve
    (tests/mil/test_heads.py); MambaMIL (Yang et al., 2024) reports the same tendency of Mamba to overfit in MIL.
    """

    def __init__(self, in_dim: int, num_classes: int, dim: int = 128, depth: int = 1, d_state: int = 16,
                 expand: int = 2, conv_kernel: int = 5, dropout: float = 0.25, attention_dim: int = 128,
                 order: TileOrder = TileOrder.HILBERT) -> None:
        super().__init__(in_dim, num_classes)
        self.order = TileOrder(order)
        self.input_proj = nn.Sequential(Standardise(in_dim), nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(GatedConvBlock(dim, expand, conv_kernel))
            self.blocks.append(BiMambaBlock(dim, expand, d_state))
        for block in self.blocks:  # every residual branch starts at zero: see the class docstring
            output = block.fc2 if isinstance(block, GatedConvBlock) else block.out_proj
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)
        self.pool = GatedAttentionPool(dim, attention_dim, dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def _permutation(self, features: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor | None:
        """(B, N) scan order per bag, or None to keep the given order."""
        if coords is None or self.order is TileOrder.GIVEN:
            return None
        return torch.stack([hilbert_order(bag_coords) for bag_coords in coords]).to(features.device)

    def _forward_bags(self, features: torch.Tensor, coords: torch.Tensor | None) -> MILOutput:
        permutation = self._permutation(features, coords)
        if permutation is not None:
            features = torch.gather(features, 1, permutation[..., None].expand_as(features))
        x = self.input_proj(features)
        for block in self.blocks:
            x = block(x)
        bag, scores = self.pool(x)
        if permutation is not None:  # scores back in the caller's tile order
            scores = torch.empty_like(scores).scatter_(1, permutation, scores)
        return MILOutput(self.classifier(bag), scores)

    @torch.no_grad()
    def predict_bag(self, features: torch.Tensor, coords: torch.Tensor | None = None,
                    chunk_size: int = 4096) -> MILOutput:
        """Exact streaming inference on one bag; activations are held for at most ``chunk_size`` tiles at once
        beyond the (N, dim) sequence itself."""
        features, coords, _ = self._check(features, coords, None)
        device = next(self.parameters()).device
        permutation = self._permutation(features, coords)
        order = permutation[0].to(features.device) if permutation is not None else None
        # permute chunk by chunk: a permuted copy of a 100k x 1024 input alone would be 400 MB
        x = torch.cat([self.input_proj((features[:, s:s + chunk_size] if order is None
                                        else features[:, order[s:s + chunk_size]]).to(device))
                       for s in range(0, features.shape[1], chunk_size)], dim=1)
        for block in self.blocks:
            x = block.forward_streaming(x, chunk_size)
        pool, scores = StreamingAttentionPool(), []
        for start in range(0, x.shape[1], chunk_size):
            hidden = x[:, start:start + chunk_size]
            chunk_scores = self.pool.scores(hidden)
            pool.update(hidden, chunk_scores)
            scores.append(chunk_scores)
        scores = torch.cat(scores, dim=1)
        if permutation is not None:
            scores = torch.empty_like(scores).scatter_(1, permutation.to(scores.device), scores)
        return MILOutput(self.classifier(pool.result()), scores.cpu())
