"""MAMIM: Mamba Masked Image Modeling, stage 1 of SSMamba (self-supervised, on the target data itself).

A large share of square patches is masked; the encoder sees the image with every masked patch replaced by a
learnable mask token right after the stem, so every stage, convolutions and scans alike, sees one consistent mask.
A light decoder maps the encoder's features back to pixels, and the loss is the mean squared error against
per-patch-normalised pixels, on masked patches only (SimMIM-style, which suits a hierarchical encoder that cannot drop
tokens as a plain ViT can). The decoder reads the last ``decoder_levels`` stage maps (see :class:`PyramidDecoder`):
with one level, the stride-32 map alone must carry every pixel of a 32 x 32 area through one linear layer, which
pushes the deepest stage towards pixel detail; with two (the default), the stride-16 map supplies local detail, as in
SparK's hierarchical decoder. On crchp, two levels reconstruct better (loss 0.43 vs 0.51 after 956 steps) and
fine-tuned equally well (docs/results.md).

How the scan treats masked positions: mask tokens stay in the sequence, so the spatial layout that the directional
scans rely on is intact. Δ, B and C are functions of each token, so the model can learn, for the mask token, a small
Δ (carry the state across, write little into it) and so pass context over masked regions; MambaMIM hard-codes a
similar idea by interpolating masked tokens. Input pixels under the mask are also zeroed, so the stem's overlapping
3x3 convolutions cannot see masked pixels at patch borders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmamba.models.ssmamba import GELU, SSMamba

__all__ = ["MaskGenerator", "PixelDecoder", "PyramidDecoder", "MAMIM"]


class MaskGenerator:
    """Random patch masks with an exact ratio: ``(B, H/p, W/p)`` bool, ``round(ratio * n_patches)`` True per image.

    Args:
        mask_ratio: share of patches masked. patch_size: side of a square mask patch in pixels.
    """

    def __init__(self, mask_ratio: float = 0.6, patch_size: int = 32):
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio, self.patch_size = mask_ratio, patch_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the mask patch size "
                             f"{self.patch_size}; pretrain at a crop size that is")
        return height // self.patch_size, width // self.patch_size

    def __call__(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
        gh, gw = self.grid(height, width)
        n = gh * gw
        n_masked = min(n - 1, max(1, round(self.mask_ratio * n))) if n > 1 else 1
        noise = torch.rand(batch, n, generator=generator)
        ranks = noise.argsort(1).argsort(1)  # a random permutation per image
        return (ranks < n_masked).view(batch, gh, gw).to(device)


class PixelDecoder(nn.Module):
    """Light decoder: ``(B, C, h, w)`` stride-``s`` features -> ``(B, 3, s*h, s*w)`` pixels (1x1 conv + shuffle)."""

    def __init__(self, in_dim: int, stride: int = 32, out_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, stride * stride * out_chans, 1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(x))


class PyramidDecoder(nn.Module):
    """Top-down decoder over the last ``len(in_dims)`` stage maps (coarse to fine, each at half the previous
    stride), then :class:`PixelDecoder` at the finest stride.

    ``forward([(B, in_dims[0], h, w), (B, in_dims[1], 2h, 2w), ...]) -> (B, out_chans, h * coarse_stride, ...)``.
    Each finer level adds a 1x1 projection of its map to the upsampled coarser one, followed by a residual depthwise
    3x3 + pointwise block; one level is exactly a :class:`PixelDecoder`.
    """

    def __init__(self, in_dims: list[int], coarse_stride: int = 32, width: int = 128, out_chans: int = 3):
        super().__init__()
        fine_stride = coarse_stride // 2 ** (len(in_dims) - 1)
        if len(in_dims) == 1:
            width = in_dims[0]
        self.inputs = nn.ModuleList([nn.Identity() if len(in_dims) == 1 else nn.Conv2d(dim, width, 1)
                                     for dim in in_dims])
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width),
                                                   GELU(), nn.Conv2d(width, width, 1))
                                     for _ in in_dims[1:]])
        self.pixels = PixelDecoder(width, fine_stride, out_chans)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = self.inputs[0](maps[0])
        for project, block, fine in zip(self.inputs[1:], self.blocks, maps[1:]):
            x = F.interpolate(x, size=fine.shape[-2:], mode="nearest") + project(fine)
            x = x + block(x)
        return self.pixels(x)


class MAMIM(nn.Module):
    """Masked image modelling around an :class:`SSMamba` encoder.

    ``forward(images: (B, 3, H, W)) -> (loss, prediction (B, 3, H, W), mask (B, H/p, W/p))``, with ``H, W``
    multiples of 32 and of the mask patch size.
    """

    def __init__(self, encoder: SSMamba, mask_ratio: float = 0.6, patch_size: int = 32, norm_pix_loss: bool = True,
                 decoder_levels: int = 2, decoder_width: int = 128):
        super().__init__()
        n_stages = len(encoder.cfg.dims)
        if not 1 <= decoder_levels <= n_stages:
            raise ValueError(f"decoder_levels must be in 1..{n_stages}, got {decoder_levels}")
        self.encoder = encoder
        self.masker = MaskGenerator(mask_ratio, patch_size)
        self.norm_pix_loss = norm_pix_loss
        self.mask_token = nn.Parameter(torch.zeros(1, encoder.cfg.dims[0], 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.stride = 4 * 2 ** (len(encoder.cfg.dims) - 1)
        self.decoder_levels = decoder_levels
        self.decoder = PyramidDecoder(list(encoder.cfg.dims[::-1][:decoder_levels]), self.stride, decoder_width,
                                      encoder.in_chans)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names, as :meth:`SSMamba.no_weight_decay` gives them."""
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()} | {"mask_token"}

    def upsample_mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(B, gh, gw)`` bool -> ``(B, 1, height, width)`` float, nearest."""
        return F.interpolate(mask[:, None].float(), size=(height, width), mode="nearest")

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Masked images -> the last ``decoder_levels`` stage maps, coarse first: ``(B, num_features, H/32, W/32)``
        (normalised, as the classifier sees it), then ``(B, dims[-2], H/16, W/16)``, ..."""
        h, w = images.shape[-2:]
        images = images * (1 - self.upsample_mask(mask, h, w))  # no masked pixel reaches the stem
        x = self.encoder.forward_stem(images)  # (B, C0, H/4, W/4)
        m = self.upsample_mask(mask, *x.shape[-2:])
        x = x * (1 - m) + self.mask_token.to(x.dtype) * m
        maps = self.encoder.forward_intermediates_from_stem(x, indices=self.decoder_levels, norm=True,
                                                            intermediates_only=True)
        return maps[::-1]

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels normalised per mask patch (over its pixels and channels, as MAE): ``(B, 3, H, W)``."""
        if not self.norm_pix_loss:
            return images
        p = self.masker.patch_size
        b, c, h, w = images.shape
        patches = images.view(b, c, h // p, p, w // p, p)
        mean = patches.mean(dim=(1, 3, 5), keepdim=True)
        var = patches.var(dim=(1, 3, 5), keepdim=True)
        return ((patches - mean) / (var + 1e-6).sqrt()).view(b, c, h, w)

    def loss(self, images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the pixels of masked patches only."""
        pixel_mask = self.upsample_mask(mask, *images.shape[-2:])  # (B, 1, H, W)
        error = (prediction - self.targets(images)).pow(2).mean(1, keepdim=True)  # (B, 1, H, W)
        return (error * pixel_mask).sum() / pixel_mask.sum().clamp_min(1)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        b, _, h, w = images.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"MAMIM needs image sides that are multiples of {self.stride}, got {h}x{w}")
        if mask is None:
            mask = self.masker(b, h, w, generator=generator, device=images.device)
        prediction = self.decoder(self.encode(images, mask))  # (B, 3, H, W)
        return self.loss(images, prediction, mask), prediction, mask

    def reconstruction(self, images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Prediction mapped back to image statistics (undoing the per-patch normalisation with the true patch
        mean/std), visible patches pasted from the input: ``(B, 3, H, W)`` for viewing."""
        if self.norm_pix_loss:
            p = self.masker.patch_size
            b, c, h, w = images.shape
            patches = images.view(b, c, h // p, p, w // p, p)
            mean = patches.mean(dim=(1, 3, 5), keepdim=True)
            std = (patches.var(dim=(1, 3, 5), keepdim=True) + 1e-6).sqrt()
            prediction = (prediction.view(b, c, h // p, p, w // p, p) * std + mean).view(b, c, h, w)
        m = self.upsample_mask(mask, *images.shape[-2:])
        return images * (1 - m) + prediction * m
