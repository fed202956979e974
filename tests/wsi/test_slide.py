from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssmamba.wsi.slide import (MissingMppError, PILImageSlide, SlideBackend, SlideError, TiffSlideSlide,
                               mpp_from_properties, open_slide)


def test_real_aperio_slide_opens_with_its_mpp(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.backend is SlideBackend.OPENSLIDE
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.name == "CMU-1-Small-Region"
        region = slide.read_region((1000, 1000), 0, (64, 48))
        assert region.mode == "RGB" and region.size == (64, 48)


def test_pyramid_levels_and_mpp_from_tiff_resolution(position_slide):
    path, image = position_slide
    with open_slide(path) as slide:
        assert slide.level_dimensions == [(1536, 1024), (768, 512), (384, 256)]
        assert slide.level_downsamples == [1.0, 2.0, 4.0]
        assert slide.mpp == pytest.approx(0.25)
        assert slide.best_level_for_downsample(2.0) == 1
        assert slide.best_level_for_downsample(3.9) == 1
        assert slide.best_level_for_downsample(0.5) == 0
        # location is level 0 even when reading level 2
        region = np.asarray(slide.read_region((400, 200), 2, (8, 8)))
        np.testing.assert_array_equal(region, image[200:232:4, 400:432:4])


def test_tiffslide_backend_reads_the_same_pixels(position_slide):
    path, image = position_slide
    with TiffSlideSlide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(np.asarray(slide.read_region((300, 100), 1, (16, 16))),
                                      image[100:132:2, 300:332:2])


@pytest.mark.parametrize("properties, expected", [
    ({"openslide.mpp-x": "0.2527"}, 0.2527),
    ({"aperio.MPP": "0.499"}, 0.499),
    ({"tiff.XResolution": "20000", "tiff.ResolutionUnit": "centimeter"}, 0.5),
    ({"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}, 0.25),
    ({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"}, None),  # editor placeholder, 353 µm/px
    ({"tiff.XResolution": "20000"}, None),  # no unit: meaningless
    ({"openslide.mpp-x": "nan"}, None),
    ({}, None),
])
def test_mpp_from_properties(properties, expected):
    found = mpp_from_properties(properties)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_plain_image_without_resolution_asks_for_slide_mpp(tmp_path):
    path = tmp_path / "crop.png"
    Image.new("RGB", (40, 30), (200, 100, 150)).save(path)
    with pytest.raises(MissingMppError, match=r"crop\.png.*--slide-mpp"):
        open_slide(path)
    slide = open_slide(path, mpp=0.5)
    assert isinstance(slide, PILImageSlide) and slide.mpp == 0.5 and slide.dimensions == (40, 30)


def test_plain_image_dpi_gives_mpp_and_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "scan.png"
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:10] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    Image.fromarray(rgba).save(path, dpi=(50_800, 50_800))  # 0.5 µm/px
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.5, rel=1e-3)
    pixels = np.asarray(slide.read_region((0, 0), 0, (20, 20)))
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[15, 0]) == (255, 255, 255)


def test_16_bit_slide_uses_the_roi_conversion_not_its_own_maximum(tmp_path):
    """A dim 16-bit image keeps its brightness: 1/257 scaling, as ROI images get, not stretched to its maximum."""
    from ssmamba.data.imageio import read_rgb

    path = tmp_path / "dim16.png"
    grey = np.full((8, 8), 257 * 40, np.uint16)  # 8-bit value 40 everywhere
    grey[0, 0] = 257 * 100
    Image.fromarray(grey).save(path)
    pixels = np.asarray(open_slide(path, mpp=0.5).read_region((0, 0), 0, (8, 8)))
    assert tuple(pixels[0, 0]) == (100, 100, 100) and tuple(pixels[4, 4]) == (40, 40, 40)  # max-scaling: 255, 102
    np.testing.assert_array_equal(pixels, np.asarray(read_rgb(path)))


def test_plain_image_reads_past_the_edge_as_white(tmp_path):
    path = tmp_path / "edge.png"
    Image.new("RGB", (10, 10), (0, 0, 0)).save(path)
    pixels = np.asarray(open_slide(path, mpp=1.0).read_region((5, -5), 0, (10, 10)))
    assert (pixels[5:, :5] == 0).all()  # inside the image
    assert (pixels[:5] == 255).all() and (pixels[:, 5:] == 255).all()  # outside


def test_corrupt_and_missing_files_raise_slide_error_naming_the_file(tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide at all")
    with pytest.raises(SlideError, match="broken.svs"):
        open_slide(broken)
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "absent.svs")


def test_override_must_be_positive(position_slide):
    with pytest.raises(ValueError, match="positive"):
        open_slide(position_slide[0], mpp=0)


def test_thumbnail_is_assembled_in_bands(position_slide, monkeypatch):
    import ssmamba.wsi.slide as slide_module

    path, image = position_slide
    with open_slide(path) as slide:
        whole = np.asarray(slide.thumbnail(384), dtype=float)
        monkeypatch.setattr(slide_module, "THUMBNAIL_BAND_PIXELS", 384 * 10)  # 10-row bands of level 2
        banded = np.asarray(slide.thumbnail(384), dtype=float)
    assert whole.shape == banded.shape == (256, 384, 3)
    np.testing.assert_array_equal(whole, np.asarray(image[::4, ::4], dtype=float))  # level 2 as is
    assert np.abs(banded - whole).mean() < 1.0
