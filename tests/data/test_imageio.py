import numpy as np
import pytest
from data_helpers import position_image
from PIL import Image

from ssmamba.data.imageio import Padding, centred_crop, pad_to_min_size, read_rgb, to_rgb


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8), mode="L")
    rgb = np.asarray(to_rgb(gray))
    assert rgb.shape == (2, 2, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb[1, 0, 0] == 200


def test_rgba_is_composited_on_white():
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)   # opaque red stays red
    rgba[0, 1] = (255, 0, 0, 0)     # fully transparent becomes white, not red or black
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0
    rgb = np.asarray(to_rgb(palette))
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 1]) == (0, 255, 0)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    rgb = np.asarray(read_rgb(path))
    assert rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 100], [200, 255]]


def test_centred_crop_reads_the_right_pixels():
    parent = position_image(40, 30)
    crop = centred_crop(parent, centre_x=20.2, centre_y=10.0, size=8, padding=Padding.REFLECT)
    assert crop.shape == (8, 8, 3)
    # centre pixel (row size // 2, column size // 2) is the parent's (y=10, x=20)
    assert tuple(crop[4, 4]) == (20, 10, 7)
    assert (crop == parent[6:14, 16:24]).all()


@pytest.mark.parametrize("padding", list(Padding))
def test_centred_crop_pads_at_the_edge(padding):
    parent = position_image(40, 30)
    crop = centred_crop(parent, centre_x=0, centre_y=29, size=8, padding=padding)
    assert crop.shape == (8, 8, 3)
    inside = crop[:5, 4:]                 # rows 25..29, columns 0..3 of the parent
    assert (inside == parent[25:30, 0:4]).all()
    if padding is Padding.CONSTANT:
        assert (crop[:, :4] == 255).all() and (crop[5:] == 255).all()
    else:                                 # mirror without repeating the edge: column -1 is column 1
        assert (crop[:5, 3] == parent[25:30, 1]).all()
        assert (crop[5, 4:] == parent[28, 0:4]).all()


def test_crop_entirely_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        centred_crop(position_image(10, 10), centre_x=100, centre_y=5, size=8, padding=Padding.REFLECT)


def test_pad_to_min_size_pads_short_strips_only():
    strip = Image.fromarray(position_image(50, 3))
    padded = pad_to_min_size(strip, 50, Padding.CONSTANT)
    assert padded.size == (50, 50)
    rows = np.asarray(padded)
    assert (rows[23:26] == position_image(50, 3)).all() and (rows[0] == 255).all()
    square = Image.fromarray(position_image(60, 60))
    assert pad_to_min_size(square, 50, Padding.REFLECT) is square
    one_row = pad_to_min_size(Image.fromarray(position_image(5, 1)), 4, Padding.REFLECT)
    assert one_row.size == (5, 4)
