"""SSMamba: a hybrid hierarchical convolution + state-space encoder for histology.

Layout (strides 4, 8, 16, 32; no position embedding, so any input size works)::

    stem (2x conv3x3/2) -> stage 1: ConvBlocks -> down -> stage 2: ConvBlocks
                        -> down -> stage 3: HybridBlocks -> down -> stage 4: HybridBlocks -> norm -> pool -> head

    HybridBlock (channels-last):  x = x + LPR(x)                      local perception residual (dwconv 3x3)
                                  x = x + DropPath(DMS(LN(x)))        directional multi-scale selective scans
                                  x = x + DropPath(MLP(LN(x)))
    with the last ``attn_blocks`` HybridBlocks of stages 3-4 using self-attention instead of DMS (MambaVision-style).

Convolutions are cheap and precise at high resolution where tokens are many; scans give a global receptive field in
linear time where tokens carry more meaning. The timm interface (``forward_features``, ``forward_head``,
``reset_classifier``, ``forward_intermediates``, ``set_grad_checkpointing``, ``group_matcher``) is implemented here
without importing timm; ``ssmamba.models.factory`` registers the variants with timm when it is installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssmamba.models.dms import DirectionalMultiScaleMixer

__all__ = ["SSMamba", "SSMambaConfig", "LocalPerceptionResidual", "HybridBlock", "ConvBlock", "DropPath"]


@dataclass
class SSMambaConfig:
    """Architecture of an SSMamba encoder; saved verbatim in ``config.json`` next to the weights."""

    dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    conv_stages: int = 2  # how many of the first stages are convolutional (the rest are state-space)
    mlp_ratio: float = 4.0
    # DMS
    directions: tuple[str, ...] = ("row", "row_reverse", "column", "column_reverse")
    scales: tuple[int, ...] = (1, 2)
    conv_kernels: tuple[int, ...] = (3, 5, 7)
    d_state: int = 16
    expand: float = 1.0
    # LPR and attention
    lpr: bool = True
    lpr_kernel: int = 3
    attn_blocks: int = 0  # the last `attn_blocks` blocks of each state-space stage use self-attention instead of DMS
    attn_head_dim: int = 32
    layer_scale_init: float = 1e-5  # per-channel residual scale: keeps deep stacks stable in early training

    def __post_init__(self):
        self.dims, self.depths = tuple(self.dims), tuple(self.depths)
        self.directions, self.scales = tuple(self.directions), tuple(self.scales)
        self.conv_kernels = tuple(self.conv_kernels)
        if len(self.dims) != len(self.depths):
            raise ValueError(f"dims {self.dims} and depths {self.depths} must have the same length")
        if not 0 <= self.conv_stages <= len(self.dims):
            raise ValueError(f"conv_stages must be in [0, {len(self.dims)}], got {self.conv_stages}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class DropPath(nn.Module):
    """Stochastic depth per sample: ``(B, ...) -> (B, ...)``, identity at eval."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LocalPerceptionResidual(nn.Module):
    """LPR branch: a depthwise ``k x k`` convolution over the token grid, added residually by the block.

    Scans see the image as sequences; this branch restores a strictly local, translation-equivariant view so that
    small nuclei and texture differences stay visible. ``(B, H, W, C) -> (B, H, W, C)`` (the branch only).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Global multi-head self-attention over all tokens: ``(B, H, W, C) -> (B, H, W, C)``."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        self.num_heads = max(1, dim // head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, L, C/heads)
        return self.proj(y.transpose(1, 2).reshape(b, h, w, c))


class HybridBlock(nn.Module):
    """LPR + (DMS or attention) + MLP, channels-last: ``(B, H, W, C) -> (B, H, W, C)``."""

    def __init__(self, dim: int, cfg: SSMambaConfig, use_attention: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.lpr = LocalPerceptionResidual(dim, cfg.lpr_kernel) if cfg.lpr else None
        self.norm1 = nn.LayerNorm(dim)
        if use_attention:
            self.mixer = Attention(dim, cfg.attn_head_dim)
        else:
            self.mixer = DirectionalMultiScaleMixer(dim, cfg.directions, cfg.scales, cfg.conv_kernels,
                                                    cfg.d_state, cfg.expand)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.gamma1 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.gamma2 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lpr is not None:
            x = x + self.lpr(x)
        x = x + self.drop_path(self.gamma1 * self.mixer(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class ConvBlock(nn.Module):
    """Inverted-bottleneck residual conv block, channels-first: dwconv3x3 -> BN -> 1x1 expand -> GELU -> 1x1.

    ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pw1, self.act, self.pw2 = nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.gamma * self.pw2(self.act(self.pw1(self.norm(self.dwconv(x))))))


def _downsample(in_dim: int, out_dim: int, batch_norm: bool) -> nn.Sequential:
    """Conv3x3/2. Convolutional stages normalise with BN; state-space stages use their own LayerNorm instead,
    which does not depend on the batch (1x1 maps of 32 px crops, single images)."""
    conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, bias=not batch_norm)
    return nn.Sequential(conv, nn.BatchNorm2d(out_dim)) if batch_norm else conv


class Stage(nn.Module):
    """Optional 2x downsampling, then blocks. ``(B, C_in, H, W) -> (B, C, H', W')`` (always channels-first)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None, channels_last: bool, dim: int):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.down_norm = nn.LayerNorm(dim) if channels_last and downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.channels_last = channels_last
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.channels_last:
            x = self.down_norm(x.permute(0, 2, 3, 1))
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x


class FeatureInfo(list):
    """timm-like feature description: a list of ``{"num_chs", "reduction", "module"}``."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]


class SSMamba(nn.Module):
    """The SSMamba encoder with a classification head.

    ``forward(x: (B, in_chans, H, W)) -> (B, num_classes)``, or pooled embeddings ``(B, num_features)`` when
    ``num_classes=0``. Any ``H, W >= 1`` works (odd sizes are padded by the strided convs).
    """

    def __init__(self, cfg: SSMambaConfig | None = None, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.cfg = cfg = cfg or SSMambaConfig()
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.drop_rate = drop_rate
        dims = cfg.dims
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(cfg.depths)).tolist()
        stages, self.feature_info, start = [], FeatureInfo(), 0
        for i, (dim, depth) in enumerate(zip(dims, cfg.depths)):
            is_conv = i < cfg.conv_stages
            blocks = []
            for j in range(depth):
                if is_conv:
                    blocks.append(ConvBlock(dim, cfg.mlp_ratio, cfg.layer_scale_init, rates[start + j]))
                else:
                    blocks.append(HybridBlock(dim, cfg, use_attention=j >= depth - cfg.attn_blocks,
                                              drop_path=rates[start + j]))
            start += depth
            down = _downsample(dims[i - 1], dim, batch_norm=is_conv) if i > 0 else None
            stages.append(Stage(blocks, down, channels_last=not is_conv, dim=dim))
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2 ** i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {}
        self.apply(self._init_weights)
        # Channels-last throughout: depthwise convolutions run ~4x faster on CPU (oneDNN) and the switches to
        # the (B, H, W, C) layout of the state-space stages become free views.
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- timm interface -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names (suffixes) that should not be decayed: SSM dynamics, layer scales and norms."""
        return {"A_log", "D", "dt_bias", "gamma", "gamma1", "gamma2", "scale_logits"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, dims[0], ceil(H/4), ceil(W/4))``; where MAMIM swaps in mask tokens."""
        return self.stem(x.contiguous(memory_format=torch.channels_last))

    def forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output -> normalised last-stage map ``(B, num_features, H/32, W/32)``."""
        x = self.stages(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, num_features, ceil(H/32), ceil(W/32))`` (unpooled)."""
        return self.forward_stages(self.forward_stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Unpooled map ``(B, C, h, w)`` -> logits ``(B, num_classes)`` (or pooled ``(B, C)`` if pre_logits)."""
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        elif self.global_pool == "max":
            x = x.amax((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm-style: returns ``(final_features, [stage maps])`` or only the list when ``intermediates_only``.

        ``indices``: stage indices to return, or an int n for the last n stages (default: all). Maps are NCHW
        with ``feature_info[i]["num_chs"]`` channels at stride ``feature_info[i]["reduction"]``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"only output_fmt='NCHW' is supported, got {output_fmt!r}")
        n = len(self.stages)
        take = list(range(n - indices, n)) if isinstance(indices, int) else list(range(n) if indices is None
                                                                                  else indices)
        take = [i % n for i in take]
        intermediates, x = [], self.forward_stem(x)
        last = max(take) if stop_early or intermediates_only else n - 1
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                is_last = i == n - 1
                feat = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if (norm and is_last) else x
                intermediates.append(feat)
        if intermediates_only:
            return intermediates
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), intermediates


class FeatureExtractor(nn.Module):
    """``features_only=True`` wrapper: ``forward(x) -> [stage maps]`` at ``out_indices`` (timm convention)."""

    def __init__(self, model: SSMamba, out_indices: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        self.model = model
        self.out_indices = tuple(i % len(model.stages) for i in out_indices)
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)
        model.reset_classifier(0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, list(self.out_indices), intermediates_only=True)


def variant_configs() -> dict[str, SSMambaConfig]:
    """The registered variants. Params / GFLOPs at 224 px: see README (``benchmarks/model_stats.py``)."""
    return {
        "ssmamba_test": SSMambaConfig(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), d_state=4, mlp_ratio=2.0),
        "ssmamba_tiny": SSMambaConfig(dims=(48, 96, 192, 384), depths=(2, 2, 6, 2)),
        "ssmamba_small": SSMambaConfig(dims=(64, 128, 256, 512), depths=(2, 3, 10, 3)),
        "ssmamba_base": SSMambaConfig(dims=(96, 192, 384, 768), depths=(2, 3, 12, 4)),
    }
