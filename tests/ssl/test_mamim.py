"""MAMIM: exact mask ratios, loss only on masked pixels, no leakage of masked pixels, and learning."""

from __future__ import annotations

import pytest
import torch

from ssmamba import create_model
from ssmamba.ssl import MAMIM, MaskGenerator


@pytest.mark.parametrize("ratio", [0.25, 0.6, 0.75])
def test_realised_mask_ratio_matches_config(ratio):
    masks = MaskGenerator(ratio, patch_size=16)(8, 128, 128)
    assert masks.shape == (8, 8, 8)
    assert (masks.flatten(1).float().mean(1) == round(ratio * 64) / 64).all()
    assert not torch.equal(masks[0], masks[1])  # a different mask per image


def test_mask_generator_rejects_sizes_that_do_not_tile():
    with pytest.raises(ValueError, match="not a multiple of the mask patch size 32"):
        MaskGenerator(0.6, 32)(1, 100, 96)


def test_mask_generator_is_reproducible_with_a_generator():
    a = MaskGenerator(0.6, 16)(2, 64, 64, generator=torch.Generator().manual_seed(3))
    b = MaskGenerator(0.6, 16)(2, 64, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_visible_pixels_do_not_contribute_to_the_loss():
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0), mask_ratio=0.5, patch_size=16)
    images = torch.randn(2, 3, 64, 64)
    mask = MaskGenerator(0.5, 16)(2, 64, 64)
    prediction = torch.randn(2, 3, 64, 64, requires_grad=True)
    mamim.loss(images, prediction, mask).backward()
    visible = ~mamim.upsample_mask(mask, 64, 64).bool().expand(-1, 3, -1, -1)
    assert prediction.grad[visible].abs().max() == 0
    assert prediction.grad[~visible].abs().min() > 0


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_masked_input_pixels_do_not_reach_the_encoder(levels):
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0), mask_ratio=0.5, patch_size=16,
                  decoder_levels=levels).eval()
    images = torch.randn(1, 3, 64, 64)
    mask = MaskGenerator(0.5, 16)(1, 64, 64)
    pixel_mask = mamim.upsample_mask(mask, 64, 64).bool().expand(-1, 3, -1, -1)
    changed = images.clone()
    changed[pixel_mask] = torch.randn(int(pixel_mask.sum()))
    with torch.no_grad():
        torch.testing.assert_close(mamim.encode(images, mask), mamim.encode(changed, mask))


def test_reconstruction_pastes_visible_patches():
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0), patch_size=16).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        _, prediction, mask = mamim(images)
    recon = mamim.reconstruction(images, prediction, mask)
    visible = ~mamim.upsample_mask(mask, 64, 64).bool().expand(-1, 3, -1, -1)
    assert torch.equal(recon[visible], images[visible])


@pytest.mark.parametrize("levels", [1, 2])
def test_loss_falls_on_a_small_batch(levels):
    torch.manual_seed(0)
    grid = torch.linspace(0, 12.0, 64)
    images = torch.stack([torch.sin(grid.view(1, 64) * (1 + i % 3) + grid.view(64, 1) * (i % 2)).expand(3, 64, 64)
                          for i in range(8)])
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0), mask_ratio=0.5, patch_size=16, decoder_levels=levels)
    opt = torch.optim.AdamW(mamim.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss, _, _ = mamim(images, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_sizes_that_are_not_multiples_of_the_stride_fail_clearly():
    mamim = MAMIM(create_model("ssmamba_test", num_classes=0), patch_size=16)
    with pytest.raises(ValueError, match="multiples of 32"):
        mamim(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("levels, strides", [(1, [32]), (2, [32, 16]), (3, [32, 16, 8])])
def test_decoder_reads_the_last_stage_maps_coarse_first(levels, strides):
    encoder = create_model("ssmamba_test", num_classes=0)
    mamim = MAMIM(encoder, patch_size=16, decoder_levels=levels)
    images = torch.randn(2, 3, 64, 96)
    maps = mamim.encode(images, MaskGenerator(0.5, 16)(2, 64, 96))
    assert [64 // m.shape[-2] for m in maps] == strides and [96 // m.shape[-1] for m in maps] == strides
    assert [m.shape[1] for m in maps] == list(encoder.cfg.dims[::-1][:levels])
    loss, prediction, _ = mamim(images)
    assert prediction.shape == images.shape and torch.isfinite(loss)
    with pytest.raises(ValueError, match="decoder_levels"):
        MAMIM(encoder, decoder_levels=5)
