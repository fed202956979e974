"""One interface over whole-slide images and plain large images.

``open_slide(path)`` tries, in order, OpenSlide (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...), tiffslide
(pure-Python TIFF pyramids OpenSlide refuses, e.g. SubIFD-based OME-TIFF) and PIL (PNG, JPEG, BMP, untiled TIFF).
Every backend returns the same :class:`Slide`: level geometry, the µm per pixel of level 0, and
``read_region(location, level, size)`` with ``location`` in level-0 pixels (OpenSlide's convention), returning RGB
converted by :func:`ssmamba.data.imageio.to_rgb`, the conversion ROI images get too (alpha composited on white,
16-bit scaled by the fixed 1/257, never by a tile's own maximum).

The µm/px of level 0 is read from the slide's metadata; when it is absent or implausible a :class:`MissingMppError`
says where we looked, and the caller passes ``mpp=`` (``--slide-mpp`` on the command line) to override it.
"""

from __future__ import annotations

import abc
import enum
import math
from pathlib import Path
from typing import Mapping

from PIL import Image

from ssmamba.data.imageio import to_rgb

# µm/px outside this range is not a microscope scan: 72 or 96 dpi placeholders written by image editors give
# 353 or 265 µm/px, and we would rather ask the user than tile at a resolution that is silently wrong.
PLAUSIBLE_MPP_RANGE = (0.05, 20.0)

# Plain images are decoded whole into memory. PIL refuses images over ~179 Mpx as a decompression-bomb guard;
# a 1 Gpx RGB image (3 GB decoded) is the largest we accept knowingly. Bigger images belong in a tiled pyramid.
MAX_PLAIN_IMAGE_PIXELS = 1_000_000_000

# Thumbnails are assembled from bands of at most this many pixels of the level they are read from (~100 MB RGBA).
THUMBNAIL_BAND_PIXELS = 1 << 25

PLAIN_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
SLIDE_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".svslide", ".bif", ".dcm", ".qptiff"}
) | TIFF_SUFFIXES | PLAIN_IMAGE_SUFFIXES


class SlideError(Exception):
    """A slide that cannot be opened or read; the message names the file."""


class MissingMppError(SlideError):
    """The slide does not say how many µm a pixel is, so tiling at a physical resolution is impossible."""


class SlideBackend(enum.Enum):
    OPENSLIDE = "openslide"
    TIFFSLIDE = "tiffslide"
    PIL = "pil"


class Slide(abc.ABC):
    """A multi-resolution image. Level 0 is full resolution; ``level_downsamples[k]`` is level k's factor."""

    backend: SlideBackend

    def __init__(self, path: Path, level_dimensions: list[tuple[int, int]], level_downsamples: list[float],
                 mpp: float) -> None:
        self.path = path
        self.level_dimensions = level_dimensions  # [(width, height)] per level
        self.level_downsamples = level_downsamples
        self.mpp = mpp  # µm per level-0 pixel

    @property
    def name(self) -> str:
        """The slide id used for every output file: the file name without its last suffix."""
        return self.path.stem

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level that is still at least as fine as ``downsample`` (so tiles are only ever shrunk).

        A 1 % slack absorbs levels whose stated downsample is a rounding of the real one (e.g. 4.0002).
        """
        candidates = [k for k, d in enumerate(self.level_downsamples) if d <= downsample * 1.01]
        return max(candidates, key=lambda k: self.level_downsamples[k]) if candidates else 0

    @abc.abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGB image of ``size`` (w, h) pixels of ``level``, whose top-left is ``location`` in level-0 pixels."""

    def thumbnail(self, max_side: int) -> Image.Image:
        """RGB image of the whole slide whose longer side is at most ``max_side`` pixels.

        Read from the coarsest level at least as fine as needed, in horizontal bands of at most
        ``THUMBNAIL_BAND_PIXELS``, so a single-level 100k-pixel-wide image never has to fit in memory at once.
        """
        width, height = self.dimensions
        scale = min(1.0, max_side / max(width, height))
        out_width, out_height = max(1, round(width * scale)), max(1, round(height * scale))
        level = self.best_level_for_downsample(1.0 / scale)
        level_width, level_height = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        thumbnail = Image.new("RGB", (out_width, out_height), (255, 255, 255))
        band_rows = max(1, THUMBNAIL_BAND_PIXELS // level_width)
        for top in range(0, level_height, band_rows):
            rows = min(band_rows, level_height - top)
            out_top = round(top * out_height / level_height)
            out_bottom = round((top + rows) * out_height / level_height)
            if out_bottom <= out_top:
                continue
            band = self.read_region((0, int(round(top * downsample))), level, (level_width, rows))
            thumbnail.paste(band.resize((out_width, out_bottom - out_top), Image.Resampling.LANCZOS), (0, out_top))
        return thumbnail

    def close(self) -> None:
        """Release file handles (no-op by default)."""

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, dims={self.dimensions}, levels={self.level_count}, "
                f"mpp={self.mpp:.4g})")


def mpp_from_properties(properties: Mapping[str, object]) -> float | None:
    """µm/px of level 0 from OpenSlide/tiffslide properties, or None when absent or implausible.

    Looks at ``openslide.mpp-x``, ``tiffslide.mpp-x``, ``aperio.MPP``, then ``tiff.XResolution`` with
    ``tiff.ResolutionUnit`` (pixels per centimetre or inch).
    """
    for key in ("openslide.mpp-x", "tiffslide.mpp-x", "aperio.MPP"):
        value = _as_float(properties.get(key))
        if value is not None and _plausible(value):
            return value
    resolution = _as_float(properties.get("tiff.XResolution"))
    unit = str(properties.get("tiff.ResolutionUnit", "")).lower()
    if resolution and resolution > 0:
        microns_per_unit = {"centimeter": 1e4, "inch": 25_400.0}.get(unit)
        if microns_per_unit is not None and _plausible(microns_per_unit / resolution):
            return microns_per_unit / resolution
    return None


def _as_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plausible(mpp: float) -> bool:
    return PLAUSIBLE_MPP_RANGE[0] <= mpp <= PLAUSIBLE_MPP_RANGE[1]


def _resolve_mpp(path: Path, found: float | None, override: float | None, looked_at: str) -> float:
    if override is not None:
        if override <= 0:
            raise ValueError(f"mpp override must be positive, got {override}")
        return float(override)
    if found is None:
        raise MissingMppError(
            f"{path}: no plausible µm per pixel in the metadata (looked at {looked_at}); pass the level-0 "
            f"resolution with --slide-mpp (e.g. --slide-mpp 0.25 for a 40x scan, 0.5 for 20x)"
        )
    return found


class OpenSlideSlide(Slide):
    backend = SlideBackend.OPENSLIDE

    def __init__(self, path: Path, mpp: float | None = None) -> None:
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as error:  # a plain Exception subclass, so wrap it
            raise SlideError(f"{type(error).__name__}: {error}") from error
        found = mpp_from_properties(self._slide.properties)
        super().__init__(path, list(self._slide.level_dimensions), [float(d) for d in self._slide.level_downsamples],
                         _resolve_mpp(path, found, mpp, "openslide.mpp-x, aperio.MPP, tiff.XResolution"))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        import openslide

        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level, (int(size[0]), int(size[1])))
        except openslide.OpenSlideError as error:
            raise SlideError(f"{self.path}: cannot read region {location} level {level}: {error}") from error
        return to_rgb(region)

    def close(self) -> None:
        self._slide.close()


class TiffSlideSlide(Slide):
    backend = SlideBackend.TIFFSLIDE

    def __init__(self, path: Path, mpp: float | None = None) -> None:
        import tiffslide

        self._slide = tiffslide.TiffSlide(str(path))
        found = mpp_from_properties(self._slide.properties)
        super().__init__(path, list(self._slide.level_dimensions), [float(d) for d in self._slide.level_downsamples],
                         _resolve_mpp(path, found, mpp, "tiffslide.mpp-x, aperio.MPP, tiff.XResolution"))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level,
                                             (int(size[0]), int(size[1])))
        except (ValueError, OSError, KeyError) as error:  # tifffile reports corrupt tiles as ValueError
            raise SlideError(f"{self.path}: cannot read region {location} level {level}: {error}") from error
        return to_rgb(region)

    def close(self) -> None:
        self._slide.close()


class PILImageSlide(Slide):
    """A plain image held in memory as a single level (a pyramid would cost more than it saves at this size)."""

    backend = SlideBackend.PIL

    def __init__(self, path: Path, mpp: float | None = None) -> None:
        previous_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PLAIN_IMAGE_PIXELS
        try:
            with Image.open(path) as opened:
                found = _mpp_from_pil_info(opened)
                self._image = to_rgb(opened)
                self._image.load()
        except Image.DecompressionBombError as error:
            raise SlideError(f"{path}: larger than {MAX_PLAIN_IMAGE_PIXELS:,} pixels; convert it to a tiled "
                             f"pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid)") from error
        finally:
            Image.MAX_IMAGE_PIXELS = previous_limit
        super().__init__(path, [self._image.size], [1.0], _resolve_mpp(path, found, mpp, "the dpi/resolution tags"))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        if level != 0:
            raise SlideError(f"{self.path}: a plain image has only level 0, asked for level {level}")
        x, y = int(location[0]), int(location[1])
        # PIL pads reads outside the image with black; white matches the glass around tissue.
        region = Image.new("RGB", (int(size[0]), int(size[1])), (255, 255, 255))
        region.paste(self._image.crop((x, y, x + int(size[0]), y + int(size[1]))), (0, 0))
        if x < 0 or y < 0 or x + size[0] > self.dimensions[0] or y + size[1] > self.dimensions[1]:
            visible = Image.new("L", region.size, 0)
            visible.paste(255, (max(-x, 0), max(-y, 0), min(self.dimensions[0] - x, size[0]),
                                min(self.dimensions[1] - y, size[1])))
            region = Image.composite(region, Image.new("RGB", region.size, (255, 255, 255)), visible)
        return region


def _mpp_from_pil_info(image: Image.Image) -> float | None:
    """µm/px from a PNG pHYs chunk or TIFF/JPEG dpi (PIL reports both as dots per inch)."""
    dpi = image.info.get("dpi")
    if not dpi:
        return None
    value = _as_float(dpi[0])
    if not value or value <= 0:
        return None
    mpp = 25_400.0 / value
    return mpp if _plausible(mpp) else None


def _candidate_backends(path: Path) -> list[type[Slide]]:
    suffix = path.suffix.lower()
    if suffix in PLAIN_IMAGE_SUFFIXES:
        return [PILImageSlide]
    if suffix in TIFF_SUFFIXES:  # a plain strip TIFF is neither OpenSlide's nor tiffslide's business
        return [OpenSlideSlide, TiffSlideSlide, PILImageSlide]
    return [OpenSlideSlide, TiffSlideSlide]


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open ``path`` with the first backend that can read it.

    Args:
        path: a whole-slide image (anything OpenSlide or tiffslide reads) or a plain PNG/JPEG/TIFF.
        mpp: µm per level-0 pixel, overriding the metadata (needed when the file has none).

    Raises:
        SlideError: the file is missing or no backend can read it (the message lists each backend's complaint).
        MissingMppError: it opened but says nothing usable about its resolution and ``mpp`` is None.
    """
    path = Path(path)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"the level-0 mpp override must be positive, got {mpp}")
    if not path.is_file():
        raise SlideError(f"{path}: no such file")
    complaints = []
    for backend in _candidate_backends(path):
        try:
            return backend(path, mpp=mpp)
        except MissingMppError:
            raise
        except SlideError as error:
            complaints.append(f"{backend.backend.value}: {error}".replace(f"{path}: ", ""))
        except (OSError, ValueError, KeyError, IndexError, RuntimeError) as error:
            # tiffslide/tifffile raise ValueError/KeyError (TiffFileError is a ValueError), PIL raises
            # UnidentifiedImageError (an OSError); OpenSlide's own errors are wrapped in SlideError above.
            complaints.append(f"{backend.backend.value}: {type(error).__name__}: {error}")
    raise SlideError(f"{path}: cannot be opened as a slide or image ({'; '.join(complaints)})")
