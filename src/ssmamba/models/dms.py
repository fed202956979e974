"""Directional Multi-scale (DMS) token mixer: selective scans over a 2D token grid in several directions and at
several scales, fused into one output.

How we read the paper (see ``docs/architecture.md``): a single raster scan gives each token a one-sided, 1D view
of the image. DMS scans the grid along several *directions* (rows and columns, forward and backward, optionally
diagonals), so that every token sees every other token through some scan (a global receptive field), and at several
*scales*: a multi-kernel depthwise convolution before the scan mixes local context of different sizes, and extra
scans over average-pooled grids carry coarse, long-range context cheaply (a scan over a 2x pooled grid costs 1/4).
The outputs of all directions and scales are summed (scales with learned weights), normalised and gated.

All directions of one scale go through ONE directional-scan call (``ssmamba.ops.directional_scan``), which reads the
channels-last token grid in each direction's order in place and sums the directions' outputs: no flipped,
transposed or stacked copy of the sequences is made.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmamba.ops import ScanDirection, directional_scan, scan_order
from ssmamba.ops.depthwise import depthwise_conv2d
from ssmamba.ops.directional import index_cache

__all__ = ["ScanDirection", "scan_order", "to_sequence", "from_sequence", "upsample_nearest", "scaled_linear",
           "DirectionalMultiScaleMixer", "MultiKernelDepthwiseConv"]


class MultiKernelDepthwiseConv(nn.Module):
    """Depthwise convolutions of several kernel sizes on equal channel groups (MixConv-style), concatenated.

    ``(B, C, H, W) -> (B, C, H, W)``. The local half of the multi-scale design: each group of channels gets a
    different receptive field before the scan.
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (3, 5, 7)):
        super().__init__()
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {kernel_sizes}")
        base, extra = divmod(channels, len(kernel_sizes))
        self.splits = [base + (1 if i < extra else 0) for i in range(len(kernel_sizes))]
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c) for c, k in zip(self.splits, kernel_sizes) if c > 0
        )
        # each channel's kernel radius inside the largest kernel: the CPU kernels skip the zero-padded taps
        radii = [torch.full((conv.in_channels,), conv.kernel_size[0] // 2, dtype=torch.long) for conv in self.convs]
        self.register_buffer("radii", torch.cat(radii), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return depthwise_conv2d(x, self.convs[0].weight, self.convs[0].bias)
        # One depthwise conv with every kernel zero-padded to the largest: the same sums as one conv per channel
        # group, without splitting x into copies and concatenating the results (3.5x faster on CPU at 56 x 56 x 192).
        size = max(conv.kernel_size[0] for conv in self.convs)
        weight = torch.cat([F.pad(conv.weight, [(size - conv.kernel_size[0]) // 2] * 4) for conv in self.convs])
        return depthwise_conv2d(x, weight, torch.cat([conv.bias for conv in self.convs]), self.radii)


class _DirectionalScan(nn.Module):
    """Selective-scan parameters for K directions at one scale, run as one directional scan.

    ``(B, E, H, W) -> (B, E, H, W)``: the sum over directions of each direction's scan output, at the row-major
    token it belongs to.
    """

    def __init__(self, channels: int, directions: tuple[ScanDirection, ...], d_state: int, dt_rank: int,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, scalar_decay: bool = False):
        super().__init__()
        k, e, n, r = len(directions), channels, d_state, dt_rank
        self.directions = directions
        self.d_state, self.dt_rank = n, r
        # per-direction input-dependent projections: x -> (Δ low-rank, B, C)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, e))
        nn.init.uniform_(self.x_proj_weight, -(e ** -0.5), e ** -0.5)
        self.dt_proj_weight = nn.Parameter(torch.empty(k, e, r))
        nn.init.uniform_(self.dt_proj_weight, -(r ** -0.5), r ** -0.5)
        # Mamba's Δ init: softplus(dt_bias) spread log-uniformly over [dt_min, dt_max]
        dt = torch.exp(torch.rand(k * e) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        if scalar_decay:  # Mamba-2: one A per channel for all N states, A ~ U[1, 16]; one exp per step, not N
            self.A_log = nn.Parameter(torch.empty(k * e, 1).uniform_(1, 16).log())
        else:  # S4D-real init A = -(1..N), stored as log for positivity
            self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(k * e, 1))
        self.D = nn.Parameter(torch.ones(k * e))

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``scale`` (a 0-d tensor): a weight of the whole output (the mixer's scale weight). It multiplies C and D,
        which carry every term of y (y_t = C_t . h_t + D u_t): (B, K, N, L) and (K, E) values instead of the
        (B, E, H, W) output."""
        b, e, h, w = x.shape
        k, n, r, length = len(self.directions), self.d_state, self.dt_rank, h * w
        # (B, L, E): a view when x is channels-last, as the mixer makes it. The projections act on each token alone,
        # so they run in row-major order; the scan reads every direction's order from these tensors in place.
        tokens = x.permute(0, 2, 3, 1).reshape(b, length, e)
        x_dbl = F.linear(tokens, self.x_proj_weight.view(k * (r + 2 * n), e)).view(b * length, k, r + 2 * n)
        # per direction Δ = dt_proj_k (low rank): one batched matmul over k, (K, B L, R) @ (K, R, E) -> (K, B L, E)
        dt = torch.bmm(x_dbl[..., :r].transpose(0, 1), self.dt_proj_weight.transpose(1, 2))
        B, C = (x_dbl[..., r + i * n:r + (i + 1) * n].view(b, length, k, n).permute(0, 2, 3, 1) for i in (0, 1))
        D = self.D.float()
        if scale is not None:
            C, D = C * scale, D * scale
        y = directional_scan(
            tokens.transpose(1, 2),  # u (B, E, L)
            dt.view(k, b, length, e).permute(1, 0, 3, 2),  # delta (B, K, E, L)
            -torch.exp(self.A_log.float()).view(k, e, -1),  # (K, E, N), or (K, E, 1) with scalar_decay
            B, C,  # (B, K, N, L)
            D.view(k, e), self.dt_bias.float().view(k, e), delta_softplus=True,
            directions=self.directions, height=h, width=w,
        )  # fmt: skip
        return y.view(b, e, h, w)  # u's layout: channels-last when x is


def to_sequence(t: torch.Tensor, direction: ScanDirection, height: int, width: int) -> torch.Tensor:
    """Row-major ``(B, C, L)`` -> the same tokens in ``direction``'s scan order, ``(B, C, L)``.

    Rows and columns use flips and transposes (cheap to differentiate); diagonals index with :func:`scan_order`.
    """
    if direction in (ScanDirection.ROW, ScanDirection.ROW_REVERSE):
        seq = t
    elif direction in (ScanDirection.COLUMN, ScanDirection.COLUMN_REVERSE):
        seq = t.unflatten(-1, (height, width)).transpose(-1, -2).flatten(-2)
    else:
        return t[..., scan_order(direction, height, width, t.device)]
    return seq.flip(-1) if direction.value.endswith("_reverse") else seq


def from_sequence(t: torch.Tensor, direction: ScanDirection, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_sequence`: ``(B, C, L)`` in scan order -> row-major ``(B, C, L)``."""
    if direction in (ScanDirection.DIAGONAL, ScanDirection.DIAGONAL_REVERSE):
        inverse = torch.argsort(scan_order(direction, height, width, t.device))
        return t[..., inverse]
    if direction.value.endswith("_reverse"):
        t = t.flip(-1)
    if direction in (ScanDirection.COLUMN, ScanDirection.COLUMN_REVERSE):
        t = t.unflatten(-1, (width, height)).transpose(-1, -2).flatten(-2)
    return t


def _in_autocast_dtype(t: torch.Tensor) -> torch.Tensor:
    """``t`` in autocast's dtype when autocast is on for its device; ``t`` itself otherwise."""
    device = t.device.type
    return t.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else t


@index_cache
def _nearest_tokens(height: int, width: int, out_height: int, out_width: int) -> torch.Tensor:
    def source(size: int, out_size: int) -> torch.Tensor:  # F.interpolate's "nearest": floor(i * in / out) in fp32
        scale = torch.tensor(size / out_size, dtype=torch.float32)
        return torch.floor(torch.arange(out_size, dtype=torch.float32) * scale).long().clamp_max(size - 1)

    return (source(height, out_height)[:, None] * width + source(width, out_width)[None, :]).flatten()


def upsample_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.interpolate(x, (height, width), mode="nearest")`` of a ``(B, E, h, w)`` grid, returned channels-last as
    ``(B, height, width, E)``: one gather of whole tokens (F.interpolate copies channels-last inputs twice)."""
    b, e, h, w = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, e)
    return tokens.index_select(1, _nearest_tokens(h, w, height, width).to(x.device)).view(b, height, width, e)


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  scale: torch.Tensor | None) -> torch.Tensor:
    """``scale * F.linear(x, weight, bias)`` with ``scale`` (out,) a per-output-channel scale (a layer scale).

    The scale multiplies whichever is smaller, the weight (folded in: no pass over the output) or the output (no
    pass over the weight): on large maps the weight is smaller, on small ones (a 2 x 2 grid of 64-px crops, with a
    384 x 1536 weight) the output. Either way the values are the same up to rounding, and so are the gradients.
    """
    if scale is None:
        return F.linear(x, weight, bias)
    if weight.numel() <= x.numel() // x.shape[-1] * weight.shape[0]:
        return F.linear(x, scale[:, None] * weight, None if bias is None else scale * bias)
    return scale * F.linear(x, weight, bias)


class DirectionalMultiScaleMixer(nn.Module):
    """The DMS token mixer (Mamba-style gated block body).

    Args:
        dim: input/output channels C.
        directions: scan directions, e.g. ``("row", "row_reverse", "column", "column_reverse")``; one direction
            turns DMS into a plain single-direction Mamba mixer (ablation).
        scales: grid strides to scan at; ``(1, 2)`` adds a scan over the 2x average-pooled grid.
        conv_kernels: kernel sizes of the multi-kernel depthwise conv before the scan; ``(3,)`` is Mamba's conv.
        d_state: SSM state size N. expand: inner width E = expand * C. dt_rank: rank of Δ's projection.
        scalar_decay: Mamba-2-style A, one value per channel shared by its N states (``A_log`` (K E, 1) instead
            of (K E, N)): the scan computes one exp per step instead of N.

    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` (channels-last, like the LayerNorm around it).
    """

    def __init__(self, dim: int, directions=("row", "row_reverse", "column", "column_reverse"), scales=(1, 2),
                 conv_kernels=(3, 5, 7), d_state: int = 16, expand: float = 1.0, dt_rank: int | None = None,
                 scalar_decay: bool = False):
        super().__init__()
        directions = tuple(ScanDirection(d) for d in directions)
        if not directions or not scales:
            raise ValueError("DMS needs at least one direction and one scale")
        inner = int(expand * dim)
        self.scales = tuple(int(s) for s in scales)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.local_conv = MultiKernelDepthwiseConv(inner, tuple(conv_kernels))
        dt_rank = dt_rank or math.ceil(dim / 16)
        self.scans = nn.ModuleList(_DirectionalScan(inner, directions, d_state, dt_rank, scalar_decay=scalar_decay)
                                   for _ in self.scales)  # fmt: skip
        self.scale_logits = nn.Parameter(torch.zeros(len(self.scales)))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``out_scale`` (C,): a per-channel scale of the output (a block's layer scale), applied by
        :func:`scaled_linear` (folded into out_proj's weight unless the output is the smaller tensor)."""
        h, w = x.shape[1:3]
        # Under autocast the mixer's activations stay in its dtype from here to out_proj: x is cast once rather than
        # by each of in_proj's matmuls, and the scan reads and writes bfloat16 (computing in float32) instead of
        # having delta, B and C cast to the float32 of the depthwise conv's output and their gradients cast back.
        x = _in_autocast_dtype(x)
        # in_proj's two halves as two matmuls: each (B, H, W, E) is dense, so x stays channels-last all the way
        x, z = (F.linear(x, weight) for weight in self.in_proj.weight.chunk(2, dim=0))
        # (B, E, H, W), channels-last strides; the depthwise conv computes in float32 under CPU autocast
        x = F.silu(_in_autocast_dtype(self.local_conv(x.permute(0, 3, 1, 2))))
        weights = torch.softmax(self.scale_logits, 0) * len(self.scales)
        y = None
        for weight, stride, scan in zip(weights, self.scales, self.scans):  # each scan applies its scale's weight
            if stride == 1:
                out = scan(x, weight).permute(0, 2, 3, 1)  # (B, H, W, E), dense: the scan keeps x's layout
            else:
                out = upsample_nearest(scan(F.avg_pool2d(x, stride, ceil_mode=True), weight), h, w)
            y = out if y is None else y + out  # no 0 + ... pass over the first scale's output
        y = self.out_norm(y) * F.silu(z)
        return scaled_linear(y, self.out_proj.weight, None, out_scale)
