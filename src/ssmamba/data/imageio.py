"""Reading pathology images as 8-bit RGB, and padding them.

Every loader funnels its pixels through :func:`to_rgb`, so a model never sees a mode it was not trained on:
grayscale, palette, RGBA/LA (composited on white, the colour of empty glass) and 16-bit images all become
8-bit RGB.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
from PIL import Image

# Suffixes (lower case) that the folder scanners treat as images.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

# Errors PIL raises for unreadable, truncated or unsupported files; anything else is a bug and propagates.
IMAGE_ERRORS = (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)

_WHITE = (255, 255, 255)


class Padding(enum.Enum):
    """How pixels outside an image are filled when a crop or pad needs them.

    ``REFLECT`` mirrors the tissue at the border (numpy ``mode="reflect"``, the edge pixel itself not repeated):
    it keeps texture statistics plausible, so a nucleus near the edge does not sit next to a blank stripe.
    ``CONSTANT`` fills with white, the colour of empty glass: honest about missing tissue.
    """

    REFLECT = "reflect"
    CONSTANT = "constant"


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    RGBA/LA/PA and palette images with transparency are composited on white; 16-bit grayscale (``I;16*``, or
    ``I`` holding values above 255) is scaled by 1/257 so 65535 maps to 255; float images in [0, 1] are scaled
    by 255, larger floats clipped to [0, 255].
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_wide_to_uint8(np.asarray(image), mode)).convert("RGB")
    return image.convert("RGB")


def _wide_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) integer or float array of a single-channel wide image -> (H, W) uint8."""
    if mode == "F":
        values = array.astype(np.float64)
        if values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    values = array.astype(np.int64)
    # "I;16*" is 16-bit by definition; plain "I" (32-bit) is how PIL sometimes opens 16-bit PNGs.
    is_16_bit = mode.startswith("I;16") or (values.size and values.max() > 255)
    if is_16_bit:
        values = (values + 128) // 257  # round(v / 257): 65535 -> 255, 0 -> 0
    return np.clip(values, 0, 255).astype(np.uint8)


def read_rgb(path: Path) -> Image.Image:
    """Decode an image file fully (so truncation errors surface here, not later) and return it as 8-bit RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def pad_array(array: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
              padding: Padding) -> np.ndarray:
    """Pad an (H, W, 3) uint8 array on each side; reflection of a 1-pixel-wide image repeats that pixel."""
    widths = ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0))
    if not (pad_top or pad_bottom or pad_left or pad_right):
        return array
    if padding is Padding.CONSTANT:
        return np.pad(array, widths, mode="constant", constant_values=255)
    # numpy cannot reflect an axis of length 1 (no second pixel to mirror); "edge" is the only sensible reading.
    if min(array.shape[:2]) < 2:
        return np.pad(array, widths, mode="edge")
    return np.pad(array, widths, mode="reflect")


def centred_crop(array: np.ndarray, centre_x: float, centre_y: float, size: int, padding: Padding) -> np.ndarray:
    """A (size, size, 3) crop of an (H, W, 3) array centred on pixel (x = column, y = row), padded at the edges.

    The crop spans columns ``round(x) - size // 2`` to ``round(x) - size // 2 + size`` (same for rows), so an
    even size puts the centre pixel just right of/below the middle, as ``Image.crop`` conventions do.
    """
    height, width = array.shape[:2]
    left = int(round(centre_x)) - size // 2
    top = int(round(centre_y)) - size // 2
    right, bottom = left + size, top + size
    inner = array[max(top, 0):min(bottom, height), max(left, 0):min(right, width)]
    if inner.size == 0:
        raise ValueError(f"crop centred at ({centre_x}, {centre_y}) lies outside the {width}x{height} image")
    return pad_array(inner, max(-top, 0), max(bottom - height, 0), max(-left, 0), max(right - width, 0), padding)


def pad_to_min_size(image: Image.Image, min_size: int, padding: Padding) -> Image.Image:
    """Pad an RGB image, centred, so both sides are at least ``min_size`` (e.g. IDC's 50 x 8 border strips)."""
    width, height = image.size
    if width >= min_size and height >= min_size:
        return image
    extra_x, extra_y = max(min_size - width, 0), max(min_size - height, 0)
    padded = pad_array(np.asarray(image), extra_y // 2, extra_y - extra_y // 2, extra_x // 2, extra_x - extra_x // 2,
                       padding)
    return Image.fromarray(padded)
