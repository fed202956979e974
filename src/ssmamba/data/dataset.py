"""The one dataset class every loader returns: records in, ``(transform(rgb_image), label)`` out.

Bad files are handled in two places, by design:

1. :meth:`ImageDataset.verify` decodes every distinct file once (fully, so truncated PNG/JPEG fail too) and drops
   the records of files that fail, listing them in ``skipped``. ``load_dataset`` runs it by default for datasets
   of up to ``AUTO_VERIFY_MAX_FILES`` files (about 4 s per 10,000 small PNGs on one core), so bad files are gone
   before training starts and the counts in the run log are the counts trained on.
2. A file that still fails at load time (a larger dataset left unverified, or a file that changed on disk) is
   logged, appended to ``skipped`` and replaced by the next readable sample, so one bad tile cannot kill a long
   run; with ``strict=True`` it raises instead. ``skipped`` entries made inside DataLoader worker processes stay
   in those processes: the log is the place to look.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch.utils.data
from PIL import Image
from tqdm.auto import tqdm

from ssmamba.data.imageio import IMAGE_ERRORS, Padding, pad_to_min_size, read_rgb
from ssmamba.data.records import UNLABELLED, ArrayItem, PixelSource, PointCrop, Record

logger = logging.getLogger(__name__)

# load_dataset verifies every file up front when a dataset has at most this many distinct files.
AUTO_VERIFY_MAX_FILES = 20_000

# How many consecutive unreadable samples __getitem__ steps over before concluding the data is broken.
_MAX_REPLACEMENTS = 16


class ImageDataset(torch.utils.data.Dataset):
    """A labelled (or unlabelled) image dataset built from :class:`Record` s.

    ``dataset[i]`` is ``(transform(image), label)`` where ``image`` is an 8-bit RGB ``PIL.Image`` and ``label``
    an ``int`` index into ``classes`` (``-1`` for every sample of an unlabelled dataset, whose ``classes`` is
    empty). Without a transform the PIL image itself is returned.

    Attributes:
        records: the samples, in a fixed order.
        classes: class names; ``label`` indexes this list. Save it with a checkpoint.
        skipped: ``(path, reason)`` of every file or record left out, at build, verify or load time.
        name: where the data came from, for the run log.

    ``min_size`` pads (centred, with ``padding``) any image whose side is shorter, e.g. IDC's border strips.
    An unreadable sample is replaced by the next readable one (training), or with ``replace_unreadable=False``
    raises ``ValueError`` (inference, where each output belongs to one record).
    """

    def __init__(self, records: Sequence[Record], classes: Sequence[str], transform: Callable | None = None, *,
                 name: str = "dataset", skipped: Sequence[tuple[str, str]] = (), strict: bool = False,
                 cache_mb: float = 256, group_name: str | None = None, split_name: str | None = None,
                 min_size: int | None = None, padding: Padding = Padding.REFLECT, replace_unreadable: bool = True):
        self.records = list(records)
        self.replace_unreadable = replace_unreadable
        self.classes = list(classes)
        self.transform = transform
        self.name = name
        self.skipped = list(skipped)
        self.strict = strict
        self.group_name = group_name
        self.split_name = split_name
        self.pixels = PixelSource(cache_mb)
        self.min_size = min_size
        self.padding = padding
        for record in self.records:
            if record.label != UNLABELLED and not 0 <= record.label < len(self.classes):
                raise ValueError(f"{self.name}: record {record.image} has label {record.label} "
                                 f"outside the {len(self.classes)} classes {self.classes}")

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class index of every record (-1 when unlabelled): for samplers and stratification."""
        return np.fromiter((r.label for r in self.records), dtype=np.int64, count=len(self.records))

    @property
    def groups(self) -> list[str | None]:
        return [r.group for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        if not -len(self.records) <= index < len(self.records):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self.records)} samples")
        index %= len(self.records)
        for attempt in range(min(_MAX_REPLACEMENTS, len(self.records))):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                image = self.pixels.read(record.image)
                if self.min_size:
                    image = pad_to_min_size(image, self.min_size, self.padding)
            except IMAGE_ERRORS as error:
                if self.strict:
                    raise RuntimeError(f"{self.name}: cannot read {record.image}: {error}") from error
                if not self.replace_unreadable:  # outputs are matched to records by position: never substitute
                    raise ValueError(f"{self.name}: {record.image} became unreadable after the files were checked "
                                     f"({error}); rerun to skip and list it") from error
                logger.warning("%s: skipping unreadable %s (%s); using the next sample instead",
                               self.name, record.image, error)
                self.skipped.append((str(record.image), f"load failed: {error}"))
                continue
            return (self.transform(image) if self.transform is not None else image), record.label
        raise RuntimeError(f"{self.name}: {_MAX_REPLACEMENTS} consecutive samples from index {index} are "
                           "unreadable; run dataset.verify() and check the files listed in dataset.skipped")

    def median_short_side(self, samples: int = 32, seed: int = 0) -> int:
        """Median short side in pixels of up to ``samples`` random readable images, as read (before the
        transform): the native field that an evaluation transform shows whole at the model's input size."""
        order = np.random.default_rng(seed).permutation(len(self.records))[:samples]
        sides = []
        for index in order:
            try:
                image = self.pixels.read(self.records[int(index)].image)
            except IMAGE_ERRORS:  # skipped and logged when the sample is used
                continue
            if self.min_size:
                image = pad_to_min_size(image, self.min_size, self.padding)
            sides.append(min(image.size))
        if not sides:
            raise ValueError(f"{self.name}: none of {len(order)} sampled images could be read")
        return int(np.median(sides))

    def class_counts(self) -> dict[str, int]:
        counts = Counter(r.label for r in self.records)
        return {name: counts.get(index, 0) for index, name in enumerate(self.classes)}

    def verify(self, workers: int | None = None, progress: bool | None = None) -> list[tuple[str, str]]:
        """Decode every distinct file once; drop the records of files that fail. Returns the new skips.

        Array rows (``.npz``/HDF5) are not decoded: their shape and dtype were checked when they were loaded.
        A nucleus point outside its image is dropped too. Decoding runs on ``workers`` threads (PIL releases
        the GIL while decoding).
        """
        by_file: dict[Path, list[Record]] = defaultdict(list)
        for record in self.records:
            if not isinstance(record.image, ArrayItem):
                by_file[record.image.file].append(record)
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            sizes = list(tqdm(pool.map(_decoded_size, by_file), total=len(by_file), desc=f"verify {self.name}",
                              unit="file", disable=(not progress) if progress is not None else None, leave=False))
        bad_records: set[int] = set()
        new_skips: list[tuple[str, str]] = []
        for (path, records), size in zip(by_file.items(), sizes):
            if isinstance(size, str):
                new_skips.append((str(path), size))
                bad_records.update(id(r) for r in records)
                continue
            width, height = size
            for record in records:
                # Inclusive bounds: annotation tools give continuous coordinates in [0, width] x [0, height].
                if isinstance(record.image, PointCrop) and not (0 <= record.image.x <= width
                                                                and 0 <= record.image.y <= height):
                    new_skips.append((str(record.image), f"point outside the {width}x{height} image"))
                    bad_records.add(id(record))
        if new_skips:
            logger.warning("%s: %d unreadable file(s) or point(s) left out, e.g. %s: %s",
                           self.name, len(new_skips), *new_skips[0])
        self.records = [r for r in self.records if id(r) not in bad_records]
        self.skipped.extend(new_skips)
        return new_skips

    def describe(self) -> str:
        """A few lines for the run log: source, split, size, class balance, groups and skips."""
        split = f" split={self.split_name}" if self.split_name else ""
        lines = [f"{self.name}{split}: {len(self):,} {'labelled' if self.labelled else 'unlabelled'} samples"]
        if self.labelled:
            total = max(len(self), 1)
            counts = self.class_counts()
            lines.append(f"  {len(self.classes)} classes: " + ", ".join(
                f"{name} {count:,} ({100 * count / total:.1f}%)" for name, count in counts.items()))
        groups = {r.group for r in self.records if r.group is not None}
        if groups:
            lines.append(f"  {len(groups):,} groups ({self.group_name or 'group'})")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped):,}: " + "; ".join(
                f"{path} ({reason})" for path, reason in self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ImageDataset({self.describe().splitlines()[0]})"


def _decoded_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a fully decodable image, or the reason it is not."""
    try:
        image: Image.Image = read_rgb(path)
    except IMAGE_ERRORS as error:
        return f"unreadable: {type(error).__name__}: {error}"
    return image.size

