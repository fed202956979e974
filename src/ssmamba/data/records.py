"""Records: where one sample's pixels come from, its label, split and group.

A record never holds pixels. Its ``image`` is a small frozen reference (a file, a crop of a parent file, or a row
of an array file) that :class:`PixelSource` turns into an RGB image on demand. Keeping records light and picklable
lets a dataset of millions of nucleus crops or PCam rows cost a few hundred bytes per sample, and lets DataLoader
workers be started with any multiprocessing method.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import h5py
import numpy as np
from PIL import Image

from ssmamba.data.imageio import Padding, centred_crop, read_rgb, to_rgb

# Label of every record in an unlabelled (pretraining) dataset.
UNLABELLED = -1


@dataclass(frozen=True)
class ImageFile:
    """A whole image file."""

    path: Path

    @property
    def file(self) -> Path:
        return self.path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class PointCrop:
    """A ``size`` x ``size`` crop of ``path`` centred on (x = column, y = row) in pixels; edges padded."""

    path: Path
    x: float
    y: float
    size: int
    padding: Padding = Padding.REFLECT

    @property
    def file(self) -> Path:
        return self.path

    def __str__(self) -> str:
        return f"{self.path}@({self.x:g},{self.y:g})"


@dataclass(frozen=True)
class ArrayItem:
    """Row ``index`` of the (N, H, W, 3) uint8 array ``key`` in an ``.npz`` or HDF5 file."""

    path: Path
    key: str
    index: int

    @property
    def file(self) -> Path:
        return self.path

    def __str__(self) -> str:
        return f"{self.path}[{self.key}][{self.index}]"


ImageRef = Union[ImageFile, PointCrop, ArrayItem]


@dataclass(frozen=True)
class Record:
    """One sample: pixels reference, class index (``UNLABELLED`` = -1 when unused), split and group names."""

    image: ImageRef
    label: int = UNLABELLED
    split: str | None = None
    group: str | None = None


class PixelSource:
    """Turns image references into 8-bit RGB PIL images, with per-process caches.

    Crops are read from decoded parents kept in an LRU cache of at most ``cache_mb`` megabytes per process
    (decoding a 500x500 PNG costs ~100 times more than cropping it, and a shuffled epoch revisits every parent
    once per nucleus); a budget in bytes rather than images keeps memory bounded whatever the parents' size. Array
    files are opened once per process: HDF5 handles do not survive ``fork``, so the caches are keyed by process id
    and dropped when pickled.
    """

    def __init__(self, cache_mb: float = 256):
        if cache_mb <= 0:
            raise ValueError(f"cache_mb must be positive, got {cache_mb}")
        self.cache_mb = cache_mb
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._parents: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._arrays: dict[tuple[Path, str], object] = {}
        self._h5_files: list[object] = []

    def __getstate__(self) -> dict:
        return {"cache_mb": self.cache_mb}

    def __setstate__(self, state: dict) -> None:
        self.cache_mb = state["cache_mb"]
        self._reset()

    def read(self, ref: ImageRef) -> Image.Image:
        if self._pid != os.getpid():
            self._reset()
        if isinstance(ref, ImageFile):
            return read_rgb(ref.path)
        if isinstance(ref, PointCrop):
            crop = centred_crop(self.parent_array(ref.path), ref.x, ref.y, ref.size, ref.padding)
            return Image.fromarray(crop)
        if isinstance(ref, ArrayItem):
            return to_rgb(Image.fromarray(np.asarray(self.array(ref.path, ref.key)[ref.index])))
        raise TypeError(f"unknown image reference {ref!r}")

    def parent_array(self, path: Path) -> np.ndarray:
        """(H, W, 3) uint8 pixels of a parent image, decoded once while it stays in the LRU cache."""
        if path in self._parents:
            self._parents.move_to_end(path)
            return self._parents[path]
        array = np.asarray(read_rgb(path))
        self._parents[path] = array
        self._cached_bytes += array.nbytes
        # Evict least recently used parents, but always keep the one just decoded.
        while self._cached_bytes > self.cache_mb * 2**20 and len(self._parents) > 1:
            _, evicted = self._parents.popitem(last=False)
            self._cached_bytes -= evicted.nbytes
        return array

    def array(self, path: Path, key: str):
        """The array ``key`` of an ``.npz`` (loaded into memory once) or HDF5 file (read lazily, row by row)."""
        cache_key = (path, key)
        if cache_key not in self._arrays:
            if path.suffix == ".npz":
                with np.load(path) as archive:
                    self._arrays[cache_key] = archive[key]
            else:
                handle = h5py.File(path, "r")
                self._h5_files.append(handle)
                self._arrays[cache_key] = handle[key]
        return self._arrays[cache_key]
