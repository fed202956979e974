from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from ssmamba.io.features import FeatureKeyMismatch, load_features
from ssmamba.models.encoders import load_encoder
from ssmamba.wsi.pipeline import extract_from_patches, tile_slide
from ssmamba.wsi.slide import open_slide
from ssmamba.wsi.config import TilingConfig
from ssmamba.wsi.tiling import TileGrid


@pytest.fixture
def tiled_blob(blob_slide, tmp_path):
    config = TilingConfig(patch_size=128, target_mpp=1.0, thumbnail_max_side=512)
    return tile_slide(blob_slide[0], config, tmp_path / "out")


def test_features_file_layout(tiled_blob, stand_in_encoder, tmp_path):
    result = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", batch_size=5,
                                  progress=False)
    folder = f"mean-colour-{stand_in_encoder.weights_sha256[:8]}_in32"
    assert result.path == tmp_path / "out" / "features_1.00mpp_128px" / folder / "blob.h5"
    grid = TileGrid.load_h5(tiled_blob.patches_path)
    with h5py.File(result.path) as h5:
        assert h5["features"].dtype == np.float32 and h5["features"].shape == (len(grid), 6)
        assert h5["coords"].dtype == np.int64
        np.testing.assert_array_equal(h5["coords"][:], grid.coords)
        attrs = dict(h5.attrs)
    assert attrs["patch_size"] == 128 and attrs["patch_size_level0"] == 256
    assert attrs["target_mpp"] == 1.0 and attrs["level0_mpp"] == 0.5
    assert attrs["encoder"] == stand_in_encoder.name and attrs["input_size"] == 32
    assert attrs["input_size_source"] == "option"
    assert attrs["weights_sha256"] == stand_in_encoder.weights_sha256 and attrs["name"] == "blob"
    key = json.loads(attrs["feature_key"])
    assert key == json.loads((result.path.parent / "feature_key.json").read_text())
    assert key["input_size"] == 32 and key["patch_size"] == 128 and key["target_mpp"] == 1.0
    assert key["mean"] == [0.485, 0.456, 0.406] and key["weights_sha256"] == stand_in_encoder.weights_sha256


def test_features_are_the_encoder_applied_to_each_tile(tiled_blob, stand_in_encoder, tmp_path):
    result = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", progress=False)
    bag = load_features(result.path)
    grid = TileGrid.load_h5(tiled_blob.patches_path)
    mean = torch.tensor(stand_in_encoder.mean).view(3, 1, 1)
    std = torch.tensor(stand_in_encoder.std).view(3, 1, 1)
    with open_slide(grid.slide_path) as slide:
        for index in (0, len(grid) - 1):
            tile = grid.read_tile(slide, index).resize((32, 32), resample=3)  # bicubic, as the pipeline does
            pixels = torch.from_numpy(np.asarray(tile).copy()).permute(2, 0, 1).float() / 255
            expected = stand_in_encoder.model(((pixels - mean) / std)[None])[0].numpy()
            np.testing.assert_allclose(bag.features[index], expected, rtol=1e-5, atol=1e-5)


def test_a_slide_already_done_is_skipped(tiled_blob, stand_in_encoder, tmp_path):
    first = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", progress=False)
    stamp = first.path.stat().st_mtime_ns
    second = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", progress=False)
    assert second.skipped and second.num_tiles == first.num_tiles
    assert first.path.stat().st_mtime_ns == stamp
    assert not list(first.path.parent.glob("*.partial"))


def test_moved_slide_needs_slide_dir(tiled_blob, stand_in_encoder, tmp_path):
    grid = TileGrid.load_h5(tiled_blob.patches_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "blob.tif").rename(moved / "blob.tif")
    with pytest.raises(FileNotFoundError, match="--slide-dir"):
        extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", progress=False)
    result = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, tmp_path / "out", slide_dir=moved,
                                  progress=False)
    assert result.num_tiles == len(grid)


def test_load_encoder_resolves_ssmamba_timm_and_checkpoints(tmp_path):
    import ssmamba

    with pytest.warns(UserWarning, match="random weights"):
        encoder = load_encoder("ssmamba_test")
    assert encoder.weights == "random" and encoder.num_features == encoder.model.num_features
    assert encoder.model(torch.zeros(2, 3, 64, 64)).shape == (2, encoder.num_features)

    checkpoint = ssmamba.save_pretrained(ssmamba.create_model("ssmamba_test", num_classes=0), tmp_path / "ckpt")
    from_dir = load_encoder(checkpoint)
    assert from_dir.weights == "checkpoint" and len(from_dir.weights_sha256) == 64
    assert from_dir.name == f"ssmamba_test-{from_dir.weights_sha256[:8]}"
    named = load_encoder("ssmamba_test", checkpoint=checkpoint)
    assert named.weights_sha256 == from_dir.weights_sha256
    assert encoder.name == f"ssmamba_test-random-{encoder.weights_sha256[:8]}"
    assert encoder.weights_sha256 != from_dir.weights_sha256  # random weights are hashed too

    with pytest.warns(UserWarning, match="random weights"):
        timm_encoder = load_encoder("resnet10t", input_size=64)
    assert timm_encoder.requested_input_size == 64 and timm_encoder.num_features == 512

    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("no_such_model_anywhere")
    with pytest.raises(FileNotFoundError):
        load_encoder("ssmamba_test", checkpoint=tmp_path / "absent")


def _variant(encoder, **changes):
    return dataclasses.replace(encoder, **changes)


def test_changed_settings_never_reuse_a_folder_silently(tiled_blob, stand_in_encoder, tmp_path):
    out = tmp_path / "out"
    first = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, out, progress=False)
    # another input size is another folder, not "already done"
    resized = extract_from_patches(tiled_blob.patches_path, _variant(stand_in_encoder, requested_input_size=16), out,
                                   progress=False)
    assert not resized.skipped and resized.path.parent != first.path.parent
    assert resized.path.parent.name.endswith("_in16") and load_features(resized.path).attrs["input_size"] == 16
    # other normalisation: same folder name, so the key must catch it
    renormalised = _variant(stand_in_encoder, mean=(0.5, 0.5, 0.5))
    with pytest.raises(FeatureKeyMismatch, match=r"mean: \(0.485, 0.456, 0.406\) -> \(0.5, 0.5, 0.5\)"):
        extract_from_patches(tiled_blob.patches_path, renormalised, out, progress=False)
    redone = extract_from_patches(tiled_blob.patches_path, renormalised, out, overwrite=True, progress=False)
    assert redone.path == first.path and not redone.skipped
    assert json.loads(load_features(redone.path).attrs["feature_key"])["mean"] == [0.5, 0.5, 0.5]


def test_a_file_from_other_settings_is_an_error_not_skipped(tiled_blob, stand_in_encoder, tmp_path):
    out = tmp_path / "out"
    first = extract_from_patches(tiled_blob.patches_path, stand_in_encoder, out, progress=False)
    (first.path.parent / "feature_key.json").unlink()  # e.g. a folder copied by hand
    with h5py.File(first.path, "a") as h5:
        del h5.attrs["feature_key"]
    with pytest.raises(FeatureKeyMismatch, match="without a feature key"):
        extract_from_patches(tiled_blob.patches_path, stand_in_encoder, out, progress=False)


def test_any_size_encoders_embed_tiles_at_the_tile_size_and_vits_at_theirs():
    from ssmamba.models.encoders import InputSizeSource

    with pytest.warns(UserWarning, match="random weights"):
        ours = load_encoder("ssmamba_test")
    with pytest.warns(UserWarning, match="random weights"):
        cnn = load_encoder("resnet10t")
    with pytest.warns(UserWarning, match="random weights"):
        vit = load_encoder("vit_tiny_patch16_224")
    assert ours.tile_input_size(64) == (64, InputSizeSource.TILE)
    assert cnn.tile_input_size(64) == (64, InputSizeSource.TILE)
    assert vit.tile_input_size(64) == (224, InputSizeSource.MODEL)
    assert _variant(vit, requested_input_size=96).tile_input_size(64) == (96, InputSizeSource.OPTION)
