from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from ssmamba.wsi.pipeline import tile_slide
from ssmamba.wsi.slide import open_slide
from ssmamba.wsi.config import TilingConfig, magnification_to_mpp
from ssmamba.wsi.tiling import TileGrid, plan_tiles


def test_magnification_alias():
    assert magnification_to_mpp(20) == 0.5
    assert magnification_to_mpp(40) == 0.25
    with pytest.raises(ValueError):
        magnification_to_mpp(0)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="min_tissue_fraction"):
        TilingConfig(min_tissue_fraction=1.5)
    with pytest.raises(ValueError, match="target_mpp"):
        TilingConfig(target_mpp=0)
    assert TilingConfig(patch_size=256, target_mpp=0.25).folder_name == "0.25mpp_256px"


@pytest.mark.parametrize("target_mpp, level, factor", [(0.25, 0, 1), (0.5, 1, 2), (1.0, 2, 4)])
def test_coords_map_back_to_the_right_pixels(position_slide, target_mpp, level, factor):
    path, image = position_slide
    config = TilingConfig(patch_size=64, target_mpp=target_mpp, use_tissue_mask=False)
    with open_slide(path) as slide:
        grid = plan_tiles(slide, config)
        assert grid.read_level == level and grid.read_size == 64
        assert grid.patch_size_level0 == 64 * factor
        expected_count = (1536 // (64 * factor)) * (1024 // (64 * factor))
        assert len(grid) == expected_count
        for index in (0, len(grid) // 3, len(grid) - 1):
            x, y = grid.coords[index]
            tile = np.asarray(grid.read_tile(slide, index))
            np.testing.assert_array_equal(tile, image[y:y + 64 * factor:factor, x:x + 64 * factor:factor])


def test_tiles_between_levels_are_read_finer_and_shrunk(position_slide):
    path, _ = position_slide
    with open_slide(path) as slide:
        grid = plan_tiles(slide, TilingConfig(patch_size=40, target_mpp=0.75, use_tissue_mask=False))
        assert grid.read_level == 1  # downsample 3 lies between levels 2x and 4x: read 2x, never upsample
        assert grid.read_size == 60 and grid.patch_size_level0 == 120
        assert grid.read_tile(slide, 5).size == (40, 40)
        assert (grid.coords[:, 0] + grid.patch_size_level0 <= 1536).all()
        assert (grid.coords[:, 1] + grid.patch_size_level0 <= 1024).all()


def test_stride_makes_overlapping_tiles(position_slide):
    with open_slide(position_slide[0]) as slide:
        grid = plan_tiles(slide, TilingConfig(patch_size=64, stride=32, target_mpp=0.25, use_tissue_mask=False))
    assert len(grid) == (1536 // 32 - 1) * (1024 // 32 - 1)
    assert sorted(set(grid.coords[:, 0]))[:3] == [0, 32, 64]


def test_only_tiles_over_tissue_are_kept(blob_slide):
    path, (x0, y0, x1, y1) = blob_slide
    with open_slide(path) as slide:
        grid = plan_tiles(slide, TilingConfig(patch_size=128, target_mpp=0.5, min_tissue_fraction=0.5,
                                              thumbnail_max_side=512))
    # tissue spans x 512-1536 and y 256-1024 exactly on the 128 px grid: 8 x 6 tiles
    assert len(grid) == 48
    assert (grid.coords[:, 0] >= x0).all() and (grid.coords[:, 0] + 128 <= x1).all()
    assert (grid.coords[:, 1] >= y0).all() and (grid.coords[:, 1] + 128 <= y1).all()
    assert (grid.tissue_fraction >= 0.5).all()


def test_patches_file_layout_and_round_trip(blob_slide, tmp_path):
    config = TilingConfig(patch_size=128, target_mpp=1.0, thumbnail_max_side=512)
    result = tile_slide(blob_slide[0], config, tmp_path / "out")
    assert result.patches_path == tmp_path / "out" / "patches_1.00mpp_128px" / "blob.h5"
    with h5py.File(result.patches_path) as h5:
        coords = h5["coords"]
        assert coords.dtype == np.int64 and coords.shape == (result.num_tiles, 2)
        for key, value in {"patch_size": 128, "patch_size_level0": 256, "patch_level": 1, "target_mpp": 1.0,
                           "level0_mpp": 0.5, "name": "blob"}.items():
            assert coords.attrs[key] == value
        assert list(coords.attrs["level_dim"]) == [2048, 1536]
    grid = TileGrid.load_h5(result.patches_path)
    assert len(grid) == result.num_tiles and grid.read_level == 1 and grid.slide_name == "blob"
    thumbnail = Image.open(result.thumbnail_path)
    assert max(thumbnail.size) == 512
    # tiles are outlined in green on the thumbnail
    pixels = np.asarray(thumbnail)
    assert ((pixels[..., 1] == 160) & (pixels[..., 0] == 0)).any()
    again = tile_slide(blob_slide[0], config, tmp_path / "out")
    assert again.skipped and again.num_tiles == result.num_tiles


def test_load_rejects_foreign_h5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["something"] = np.zeros(3)
    with pytest.raises(ValueError, match="coords"):
        TileGrid.load_h5(path)


def test_real_slide_tiles_cover_tissue_not_glass(cmu_slide, tmp_path):
    result = tile_slide(cmu_slide, TilingConfig(patch_size=224, target_mpp=0.5), tmp_path)
    grid = TileGrid.load_h5(result.patches_path)
    assert 30 <= len(grid) <= 90  # 9 x 13 = 117 possible tiles; the tissue strip covers about half
    with open_slide(cmu_slide) as slide:
        assert grid.read_level == 0 and grid.patch_size_level0 == 224  # 0.5 / 0.499 µm/px
        tiles = [np.asarray(grid.read_tile(slide, i)) for i in range(0, len(grid), 7)]
        corner = np.asarray(slide.read_region((0, 0), 0, (224, 224)))  # glass, top-left of the slide
    saturation = [np.ptp(t.astype(int), axis=2).mean() for t in tiles]
    assert min(saturation) > np.ptp(corner.astype(int), axis=2).mean() * 2
    assert all(t.shape == (224, 224, 3) for t in tiles)


@pytest.mark.parametrize("tiles", [1, 7])
def test_benchmark_synthetic_slide_tiles_to_the_count_asked(tmp_path, tiles):
    """benchmarks/wsi_extract.py's slide (JPEG pyramid, 0.25 µm/px) keeps exactly `tiles` tiles at 0.5 µm/px."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "wsi_extract.py"
    spec = importlib.util.spec_from_file_location("wsi_extract_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.write_synthetic_slide(tmp_path / "synthetic.tif", tiles)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25) and slide.level_downsamples == [1.0, 4.0, 16.0]
        grid = plan_tiles(slide, TilingConfig(patch_size=224, target_mpp=0.5))
        assert len(grid) == tiles and grid.read_size == 448
        assert np.asarray(grid.read_tile(slide, tiles - 1)).std() > 5  # textured tissue, not glass
