import numpy as np
import pytest
import torch
from data_helpers import position_image
from PIL import Image
from torchvision import tv_tensors

from ssmamba.data.transforms import (IMAGENET_MEAN, AugmentationConfig, MultiScaleCrop, RandomHEDJitter, RandomRot90,
                                     eval_transform, pretrain_transform, train_transform)


def _tissue_like(size: int = 64, seed: int = 0) -> Image.Image:
    """Pink background with dark purple discs, as a stand-in for an H&E patch."""
    rng = np.random.default_rng(seed)
    image = np.ones((size, size, 3)) * (235, 190, 215)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(10):
        cy, cx = rng.uniform(0, size, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = (90, 50, 140)
    return Image.fromarray(image.astype(np.uint8))


@pytest.mark.parametrize("zoom", [1.0, 0.5, 0.25, 2.0])
def test_multiscale_crop_covers_size_over_zoom_native_pixels(zoom):
    crop = MultiScaleCrop(32, zoom_range=(zoom, zoom))
    params = crop.make_params([Image.new("RGB", (400, 300))])
    assert params["side"] == round(32 / zoom)
    assert 0 <= params["top"] <= 300 - params["side"] and 0 <= params["left"] <= 400 - params["side"]


def test_multiscale_crop_at_native_zoom_copies_pixels():
    image = Image.fromarray(position_image(100, 80))
    out = np.asarray(MultiScaleCrop(16, zoom_range=(1.0, 1.0))(image))
    left, top = int(out[0, 0, 0]), int(out[0, 0, 1])       # the position pixels say where the crop started
    assert (out == position_image(100, 80)[top:top + 16, left:left + 16]).all()


def test_multiscale_crop_on_a_small_image_takes_its_short_side():
    crop = MultiScaleCrop(32, zoom_range=(0.25, 1.0))
    for _ in range(20):
        params = crop.make_params([Image.new("RGB", (20, 50))])
        assert params["side"] == 20                          # cannot zoom out beyond the whole image
    assert crop(Image.new("RGB", (20, 50))).size == (32, 32)
    wide = MultiScaleCrop(32, zoom_range=(0.25, 1.0))
    sides = {wide.make_params([Image.new("RGB", (64, 64))])["side"] for _ in range(200)}
    assert min(sides) >= 32 and 60 <= max(sides) <= 64 and len(sides) > 10  # zooms 0.5-1 reachable, spread out


def test_multiscale_crop_rejects_bad_ranges():
    with pytest.raises(ValueError, match="zoom"):
        MultiScaleCrop(32, zoom_range=(1.0, 0.5))


def test_rot90_is_exact_and_reaches_all_four_orientations():
    image = Image.fromarray(position_image(6, 6))
    array = np.asarray(image)
    seen = set()
    for _ in range(64):
        out = np.asarray(RandomRot90()(image))
        turns = next(k for k in range(4) if np.array_equal(out, np.rot90(array, k)))
        seen.add(turns)
    assert seen == {0, 1, 2, 3}
    tensor = tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))
    torch.manual_seed(1)
    rotated = RandomRot90()(tensor)
    assert isinstance(rotated, tv_tensors.Image)
    assert any(torch.equal(rotated, torch.rot90(tensor, k, dims=(-2, -1))) for k in range(4))


def test_hed_jitter_identity_changes_nothing_and_jitter_changes_stain():
    image = _tissue_like()
    same = np.asarray(RandomHEDJitter(sigma=0.0, bias=0.0)(image)).astype(int)
    assert np.abs(same - np.asarray(image)).max() <= 1       # exact Beer-Lambert round trip, up to rounding
    torch.manual_seed(0)
    changed = [np.abs(np.asarray(RandomHEDJitter(0.2, 0.05)(image)).astype(int) - np.asarray(image)).mean()
               for _ in range(5)]
    assert min(changed) > 1.0


def test_hed_jitter_accepts_tensors():
    image = _tissue_like()
    as_uint8 = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    out_uint8 = RandomHEDJitter(0.1, 0.02)(as_uint8)
    torch.manual_seed(0)
    out_float = RandomHEDJitter(0.1, 0.02)(as_uint8.float() / 255)
    assert out_uint8.dtype == torch.uint8 and out_float.dtype == torch.float32
    assert torch.allclose(out_uint8.float() / 255, out_float, atol=1e-6)


@pytest.mark.parametrize("builder", [pretrain_transform, train_transform, eval_transform])
def test_pipelines_end_in_a_normalised_float_tensor(builder):
    pipeline = builder(48)
    out = pipeline(_tissue_like(64))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    white = pipeline(Image.new("RGB", (64, 64), (255, 255, 255)))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(pipeline.config.std)
    # stain and brightness jitter may tint white glass by up to ~15 grey levels (0.7 after normalisation)
    assert torch.allclose(white.mean((1, 2)), expected, atol=0.7 if builder is not eval_transform else 1e-5)
    assert (white <= expected[:, None, None] + 1e-5).all()
    assert pipeline.config.size == 48 and pipeline.describe().startswith(pipeline.config.name)


def test_eval_transform_is_deterministic_and_train_is_seeded():
    image = _tissue_like(80)
    assert torch.equal(eval_transform(32)(image), eval_transform(32)(image))
    train = train_transform(32)
    torch.manual_seed(5)
    first = train(image)
    torch.manual_seed(5)
    assert torch.equal(first, train(image))
    assert not torch.equal(first, train(image))


def test_config_describes_and_rebuilds_the_pipeline():
    pipeline = pretrain_transform(64, zoom_range=(0.5, 1.0), hed=False, rot90=False, mean=(0.5, 0.5, 0.5))
    config = pipeline.config
    assert config.zoom_range == (0.5, 1.0) and config.hed_sigma == 0 and not config.rot90
    text = config.describe()
    assert "zoom 0.5-1x" in text and "HED" not in text and "rot90" not in text
    rebuilt = AugmentationConfig(**{k: v for k, v in config.to_dict().items()}).build()
    assert [type(t) for t in rebuilt.transforms] == [type(t) for t in pipeline.transforms]
    assert not any(isinstance(t, RandomHEDJitter) for t in pipeline.transforms)


def test_multiscale_crop_with_pad_out_zooms_out_past_the_image_with_a_mirrored_border():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    crop = MultiScaleCrop(16, zoom_range=(0.5, 0.5), pad_out=True)
    params = crop.make_params([image])
    assert params["side"] == 32 and params["top"] == params["left"] == 0
    out = np.asarray(crop(image)).astype(float)
    shrunk = np.asarray(image.resize((8, 8), Image.BILINEAR, reducing_gap=None)).astype(float)
    assert np.abs(out[4:12, 4:12] - shrunk).mean() < 25  # the image, shrunk, in the middle
    assert MultiScaleCrop(16, zoom_range=(0.5, 0.5)).make_params([image])["side"] == 16  # default: clamped
