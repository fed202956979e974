"""SSMamba: a hybrid hierarchical convolution + state-space encoder for histology.

Layout (strides 4, 8, 16, 32; no position embedding, so any input size works)::

    stem (2x conv3x3/2) -> stage 1: ConvBlocks -> down -> stage 2: ConvBlocks
                        -> down -> stage 3: HybridBlocks -> down -> stage 4: HybridBlocks -> norm -> pool -> head

    HybridBlock (channels-last):  x = x + LPR(x)                      local perception residual (dwconv 3x3)
                                  x = x + DropPath(DMS(LN(x)))        directional multi-scale selective scans
                                  x = x + DropPath(MLP(LN(x)))
    with the last ``attn_blocks`` HybridBlocks of stages 3-4 using self-attention instead of DMS (MambaVision-style).

Convolutions are cheap and precise at high resolution where tokens are many; scans give a global receptive field in
linear time where tokens carry more meaning.

The variants are timm models like timm's own: registered with ``register_model`` and ``generate_default_cfgs`` when
this module is imported, built by ``build_model_with_cfg`` (so ``features_only``, ``feature_cls`` and
``pretrained_cfg_overlay`` work as in timm), with the full timm interface (``forward_intermediates``,
``prune_intermediate_layers``, ``group_matcher``, ``no_weight_decay``, ``reset_classifier``, every ``global_pool``).
The architecture is an :class:`SSMambaConfig` (timm's ``model_cfg``), so ablations are config values and the
checkpoint folders of :mod:`ssmamba.models.factory` describe themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Attention, DropPath, Mlp, create_classifier, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # timm exports it from no public module
from torch import nn

from ssmamba.models.dms import DirectionalMultiScaleMixer, scaled_linear
from ssmamba.ops.depthwise import depthwise_conv2d

__all__ = ["SSMamba", "SSMambaConfig", "GELU", "LocalPerceptionResidual", "HybridBlock", "ConvBlock",
           "DenseConvBlock", "CONV_BLOCKS", "FIELDS_ADDED_LATER", "architecture", "build_ssmamba", "feature_extractor",
           "variant_configs", "EVAL_PREPROCESSING"]

@dataclass
class SSMambaConfig:
    """Architecture of an SSMamba encoder; saved verbatim in ``config.json`` next to the weights."""

    dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    conv_stages: int = 2  # how many of the first stages are convolutional (the rest are state-space)
    # the convolutional stages' block, a key of CONV_BLOCKS. "dense" (two 3x3 convs) beat "inverted" (depthwise 7x7
    # bottleneck) on validation at the leaderboard budgets: pcam1000 0.781 vs 0.774, crchp 0.692 vs 0.686, 5 of 6
    # seeds ahead (docs/results.md, issue 12); checkpoints saved without this field are "inverted"
    conv_block: str = "dense"
    mlp_ratio: float = 4.0
    # DMS
    directions: tuple[str, ...] = ("row", "row_reverse", "column", "column_reverse")
    scales: tuple[int, ...] = (1, 2)
    conv_kernels: tuple[int, ...] = (3, 5, 7)
    d_state: int = 16
    expand: float = 1.0
    scalar_decay: bool = False  # Mamba-2-style A: one decay per channel for all d_state states (one exp, not N)
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
        if self.conv_block not in CONV_BLOCKS:
            raise ValueError(f"conv_block must be one of {sorted(CONV_BLOCKS)}, got {self.conv_block!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class GELU(nn.GELU):
    """``nn.GELU`` that takes a channels-last ``(B, C, H, W)`` tensor as the dense ``(B, H, W, C)`` tensor it is.

    PyTorch's CPU GELU hands only contiguous tensors to oneDNN and runs channels-last ones through its own kernel,
    which is slower, most of all in bfloat16 (``benchmarks/step_measures.py``). The result is what ``nn.GELU`` gives
    the same values laid out contiguously, returned in the input's layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class LocalPerceptionResidual(nn.Module):
    """LPR branch: a depthwise ``k x k`` convolution over the token grid, added residually by the block.

    Scans see the image as sequences; this branch restores a strictly local, translation-equivariant view so that
    small nuclei and texture differences stay visible. ``(B, H, W, C) -> (B, H, W, C)`` (the branch only).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x.permute(0, 3, 1, 2), self.conv.weight, self.conv.bias).permute(0, 2, 3, 1)


class HybridBlock(nn.Module):
    """LPR + (DMS or attention) + MLP, channels-last: ``(B, H, W, C) -> (B, H, W, C)``."""

    def __init__(self, dim: int, cfg: SSMambaConfig, use_attention: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.lpr = LocalPerceptionResidual(dim, cfg.lpr_kernel) if cfg.lpr else None
        self.norm1 = nn.LayerNorm(dim)
        self.use_attention = use_attention
        if use_attention:  # global self-attention over all tokens of the grid
            self.mixer = Attention(dim, num_heads=max(1, dim // cfg.attn_head_dim), qkv_bias=True)
        else:
            self.mixer = DirectionalMultiScaleMixer(dim, cfg.directions, cfg.scales, cfg.conv_kernels,
                                                    cfg.d_state, cfg.expand, scalar_decay=cfg.scalar_decay)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.gamma1 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.gamma2 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lpr is not None:
            x = x + self.lpr(x)
        y = self.norm1(x)
        if self.use_attention:
            y = self.gamma1 * self.mixer(y.flatten(1, 2)).view_as(y)
        else:  # the layer scales go into the output projections (dms.scaled_linear): no pass over (B, H, W, C)
            y = self.mixer(y, out_scale=self.gamma1)  # for them unless the weight is the larger tensor
        x = x + self.drop_path(y)
        return x + self.drop_path(self._scaled_mlp(self.norm2(x)))

    def _scaled_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``gamma2 * mlp(x)`` (timm's Mlp: fc1, act, drop1, norm, fc2, drop2), gamma2 applied by fc2
        (:func:`~ssmamba.models.dms.scaled_linear`)."""
        mlp = self.mlp
        x = mlp.norm(mlp.drop1(mlp.act(mlp.fc1(x))))
        return mlp.drop2(scaled_linear(x, mlp.fc2.weight, mlp.fc2.bias, self.gamma2))


class ConvBlock(nn.Module):
    """Inverted-bottleneck residual conv block, channels-first: dwconv3x3 -> BN -> 1x1 expand -> GELU -> 1x1,
    scaled per channel (layer scale). ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, cfg: SSMambaConfig, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * cfg.mlp_ratio)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pw1, self.act, self.pw2 = nn.Conv2d(dim, hidden, 1), GELU(), nn.Conv2d(hidden, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), cfg.layer_scale_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.gamma * self.pw2(self.act(self.pw1(self.norm(self.dwconv(x))))))


class DenseConvBlock(nn.Module):
    """Residual block of two dense 3x3 convolutions, channels-first: conv3x3 -> BN -> GELU -> conv3x3 -> BN.

    ResNet's basic block without the activation after the sum, as MambaVision's convolutional stages use it. Every
    output channel sees every input channel in its 3x3 neighbourhood, a stronger local prior than a depthwise
    filter for small crops and few labels. The last BN's scale starts at zero (timm's ``zero_init_last``), so the
    block starts as the identity. ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, cfg: SSMambaConfig, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm1, self.act = nn.BatchNorm2d(dim), GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(dim)
        nn.init.zeros_(self.norm2.weight)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))))


# The convolutional stages' block, by ``SSMambaConfig.conv_block``; each takes ``(dim, cfg, drop_path)``.
CONV_BLOCKS: dict[str, type[nn.Module]] = {"inverted": ConvBlock, "dense": DenseConvBlock}


def _downsample(in_dim: int, out_dim: int, batch_norm: bool) -> nn.Module:
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
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x


# Leaf names of parameters that are never decayed although they are not 1-D: the SSM dynamics (A_log) and the conv
# blocks' layer scale, shaped (C, 1, 1). ``SSMamba.no_weight_decay`` turns them into full names, as timm expects.
_NO_DECAY_LEAVES = frozenset({"A_log", "D", "dt_bias", "gamma", "gamma1", "gamma2", "scale_logits"})


class SSMamba(nn.Module):
    """The SSMamba encoder with a classification head.

    ``forward(x: (B, in_chans, H, W)) -> (B, num_classes)``, or pooled embeddings ``(B, head_hidden_size)`` when
    ``num_classes=0``. Any ``H, W >= 1`` works (odd sizes are padded by the strided convs).

    ``global_pool`` is any of timm's (``avg``, ``max``, ``avgmax``, ``catavgmax``, ...); ``''`` pools nothing:
    the head then classifies every location, ``(B, num_classes, h, w)``, or returns the map itself when
    ``num_classes=0`` (as timm's ConvNeXt does).
    """

    def __init__(self, cfg: SSMambaConfig | None = None, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.cfg = cfg = cfg or SSMambaConfig()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.drop_rate, self.drop_path_rate = drop_rate, drop_path_rate
        dims = cfg.dims
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dims[0] // 2),
            GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(cfg.depths)).tolist()
        stages, self.feature_info, start = [], [], 0
        for i, (dim, depth) in enumerate(zip(dims, cfg.depths)):
            is_conv = i < cfg.conv_stages
            blocks = []
            for j in range(depth):
                if is_conv:
                    blocks.append(CONV_BLOCKS[cfg.conv_block](dim, cfg, rates[start + j]))
                else:
                    blocks.append(HybridBlock(dim, cfg, use_attention=j >= depth - cfg.attn_blocks,
                                              drop_path=rates[start + j]))
            start += depth
            down = _downsample(dims[i - 1], dim, batch_norm=is_conv) if i > 0 else None
            stages.append(Stage(blocks, down, channels_last=not is_conv, dim=dim))
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2 ** i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1])
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.head_drop = nn.Dropout(drop_rate)
        self.apply(self._init_weights)
        # Channels-last throughout: depthwise convolutions run ~4x faster on CPU (oneDNN) and the switches to
        # the (B, H, W, C) layout of the state-space stages become free views.
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- timm interface -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters not to decay: every 1-D tensor (norms, biases, D, Δ biases, layer scales,
        scale weights), the SSM state matrices ``A_log`` and the conv blocks' layer scales ``gamma``."""
        return {name for name, param in self.named_parameters()
                if param.ndim <= 1 or name.rsplit(".", 1)[-1] in _NO_DECAY_LEAVES}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer groups: the stem, then each stage (coarse) or each block, a stage's downsampling (conv and
        its norm) going with its first block, then the final norm; the head is what no pattern matches."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.down(?:sample|_norm)\.", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)\.", None),
            (r"^norm\.", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self._init_weights(self.head)
        reference = self.stem[0].weight
        self.head.to(device=reference.device, dtype=reference.dtype)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, dims[0], ceil(H/4), ceil(W/4))``; where MAMIM swaps in mask tokens."""
        return self.stem(x.contiguous(memory_format=torch.channels_last))

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output -> normalised last-stage map ``(B, num_features, H/32, W/32)``."""
        return self._final_norm(self.stages(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, num_features, ceil(H/32), ceil(W/32))`` (unpooled)."""
        return self.forward_stages(self.forward_stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Unpooled map ``(B, C, h, w)`` -> logits ``(B, num_classes)`` (or pooled ``(B, C)`` if pre_logits).

        With ``global_pool=''`` nothing is pooled and the head classifies each location: ``(B, num_classes, h, w)``.
        """
        x = self.global_pool(x)
        if x.ndim == 4:  # no pooling: the linear head acts on the channels of every location
            x = self.head_drop(x.permute(0, 2, 3, 1))
            return (x if pre_logits else self.head(x)).permute(0, 3, 1, 2)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's intermediates: ``(final_features, [stage maps])``, or only the list when ``intermediates_only``.

        ``indices``: stage indices to return (negative ones count from the end), or an int n for the last n stages
        (default: all). Maps have ``feature_info[i]["num_chs"]`` channels at stride ``feature_info[i]["reduction"]``,
        NCHW or NHWC (``output_fmt``). ``norm`` applies the final norm to the last stage's map (the other stages
        have none). ``stop_early`` runs no stage after the last one asked for; the final features are then that
        stage's map, unnormalised.
        """
        return self.forward_intermediates_from_stem(self.forward_stem(x), indices, norm, stop_early, output_fmt,
                                                    intermediates_only)

    def forward_intermediates_from_stem(self, x: torch.Tensor, indices: int | list[int] | None = None,
                                        norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                                        intermediates_only: bool = False):
        """:meth:`forward_intermediates` of a :meth:`forward_stem` output ``(B, dims[0], H/4, W/4)``: the
        encoder interface for callers that change the stem's tokens first (MAMIM swaps in mask tokens)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_index = len(self.stages) - 1
        intermediates = []
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        index = -1
        for index, stage in enumerate(stages):
            x = stage(x)
            if index in take_indices:
                intermediates.append(self._final_norm(x) if norm and index == last_index else x)
        if output_fmt == "NHWC":
            intermediates = [y.permute(0, 2, 3, 1) for y in intermediates]
        if intermediates_only:
            return intermediates
        if index == last_index:
            x = self._final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the norm and head that depend on them); timm's
        ``features_only=True, feature_cls='getter'`` calls it. Returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_norm or prune_end:  # the final norm is sized for, and belongs to, the last stage
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


# SSMambaConfig fields added after checkpoints (and benchmark cells) had been written, with the value every one of
# those was built with, which need not be today's default: a saved architecture without them is read as what it was.
FIELDS_ADDED_LATER = {"conv_block": "inverted"}


def architecture(variant: str, overrides: dict | None = None, written_before: set[str] | frozenset = frozenset()
                 ) -> dict:
    """The full architecture (``SSMambaConfig.to_dict()``) of ``variant`` with ``overrides``; fields named in
    ``written_before`` (keys of :data:`FIELDS_ADDED_LATER`) take the value they had before they existed."""
    legacy = {k: v for k, v in FIELDS_ADDED_LATER.items() if k in written_before}
    return dataclasses.replace(variant_configs()[variant], **{**legacy, **(overrides or {})}).to_dict()


def variant_configs() -> dict[str, SSMambaConfig]:
    """The registered variants. Params / GFLOPs at 224 px: see README (``benchmarks/model_stats.py``)."""
    return {
        "ssmamba_test": SSMambaConfig(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), d_state=4, mlp_ratio=2.0),
        "ssmamba_tiny": SSMambaConfig(dims=(48, 96, 192, 384), depths=(2, 2, 6, 2)),
        # DMS cut by measurement to what CPU training can afford: rows both ways (still a global view), no pooled
        # scan, one decay per channel. Validation (3 seeds) pcam1000 0.775 vs 0.781, crchp 0.698 vs 0.692; CPU
        # training step 1.01x / 0.97x ResNet-18's in fp32 at 64 / 224 px, against 0.69x / 0.70x (docs/results.md)
        "ssmamba_tiny_fast": SSMambaConfig(dims=(48, 96, 192, 384), depths=(2, 2, 6, 2),
                                           directions=("row", "row_reverse"), scales=(1,), scalar_decay=True),
        "ssmamba_small": SSMambaConfig(dims=(64, 128, 256, 512), depths=(2, 3, 10, 3)),
        "ssmamba_base": SSMambaConfig(dims=(96, 192, 384, 768), depths=(2, 3, 12, 4)),
    }


# What ssmamba's evaluation does to an image (``ssmamba.data.transforms.eval_transform``): resize the short side to
# the input size (bilinear, antialiased), centre-crop, normalise. Said in timm's terms, so that
# ``timm.data.create_transform(**timm.data.resolve_model_data_config(model))`` reproduces it.
EVAL_PREPROCESSING = {
    "input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
    "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
}

# Stage outputs at strides 4, 8, 16, 32; the stem and stages are flattened into the feature wrapper (timm's list
# and dict extractors rebuild the model from its top-level modules).
_FEATURE_CFG = {"out_indices": (0, 1, 2, 3), "flatten_sequential": True}


def _cfg(**kwargs) -> dict:
    return {"url": "", "num_classes": 1000, "pool_size": (7, 7), "first_conv": "stem.0", "classifier": "head",
            "license": "apache-2.0", **EVAL_PREPROCESSING, **kwargs}


default_cfgs = generate_default_cfgs({name: _cfg() for name in variant_configs()})


def build_ssmamba(variant: str, pretrained: bool = False, cfg: SSMambaConfig | None = None, **kwargs) -> nn.Module:
    """Build ``variant`` with timm's ``build_model_with_cfg``.

    ``cfg`` replaces the variant's architecture (a checkpoint's saved one); ``SSMambaConfig`` fields among
    ``kwargs`` override single values of it (``lpr=False``); the rest go to :class:`SSMamba` or to timm's builder
    (``features_only``, ``out_indices``, ``feature_cls``, ``pretrained_cfg_overlay``, ...).
    """
    if pretrained:  # timm would warn and go on with random weights
        raise ValueError(f"{variant} has no published weights to download; load a local checkpoint with "
                         f"ssmamba.create_model(checkpoint=PATH) or timm's checkpoint_path=")
    fields = {f.name for f in dataclasses.fields(SSMambaConfig)}
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    model_cfg = dataclasses.replace(cfg or variant_configs()[variant], **overrides)
    return build_model_with_cfg(SSMamba, variant, pretrained, model_cfg=model_cfg, feature_cfg=dict(_FEATURE_CFG),
                                **kwargs)


def feature_extractor(model: SSMamba, out_indices: int | tuple[int, ...] = (0, 1, 2, 3),
                      feature_cls: str | type = "list") -> nn.Module:
    """timm's ``features_only`` wrapper (``feature_cls`` ``'list'``, ``'dict'``, ``'hook'``, ``'getter'``, ...) around
    a model that is already built, e.g. with a checkpoint's weights loaded. ``out_indices``: stage indices, or an
    int n for the last n stages.

    timm's builder is the public place that makes each of these wrappers; it is handed the finished model. It
    resets the model's ``pretrained_cfg`` to the registry's, so the model's own is put back on both.
    """
    pretrained_cfg = dict(model.pretrained_cfg)
    features = build_model_with_cfg(lambda **_: model, pretrained_cfg["architecture"], False,
                                    feature_cfg=dict(_FEATURE_CFG), features_only=True, out_indices=out_indices,
                                    feature_cls=feature_cls)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg
    features.pretrained_cfg = features.default_cfg = {
        k: v for k, v in pretrained_cfg.items() if k not in ("num_classes", "classifier", "global_pool")}
    return features


@register_model
def ssmamba_test(pretrained: bool = False, **kwargs) -> nn.Module:
    """0.08 M parameters: for tests and plumbing."""
    return build_ssmamba("ssmamba_test", pretrained, **kwargs)


@register_model
def ssmamba_tiny(pretrained: bool = False, **kwargs) -> nn.Module:
    """The full DMS (four directions, scans at 1x and 2x pooled, N decays per channel), as we read the paper."""
    return build_ssmamba("ssmamba_tiny", pretrained, **kwargs)


@register_model
def ssmamba_tiny_fast(pretrained: bool = False, **kwargs) -> nn.Module:
    """The default model (``ssmamba.train.config.DEFAULT_MODEL``): ssmamba_tiny with a cheaper DMS (bidirectional
    rows, one scale, scalar decay). Trains at about ResNet-18's speed on CPU in fp32 (0.95-1.11x) and below it in bf16
    (0.85-1.02x; README); level with ssmamba_tiny on validation and the leaderboards."""
    return build_ssmamba("ssmamba_tiny_fast", pretrained, **kwargs)


@register_model
def ssmamba_small(pretrained: bool = False, **kwargs) -> nn.Module:
    return build_ssmamba("ssmamba_small", pretrained, **kwargs)


@register_model
def ssmamba_base(pretrained: bool = False, **kwargs) -> nn.Module:
    return build_ssmamba("ssmamba_base", pretrained, **kwargs)
