"""``load_dataset``: one entry point that recognises the kind of source and returns an :class:`ImageDataset`.

Kinds (detected, or forced with ``kind=``):

==========  ====================================================================================================
FOLDER      a directory: ``<class>/**`` or ``<split>/<class>/**``; with ``labelled=False`` any tree of images
MANIFEST    a CSV with a path column (``path`` or ``image``) and ``label[,split][,group]``
POINTS      a CSV with ``image,x,y`` and no ``path`` column: nucleus-centred crops (crchp ``nuclei.csv``)
NPZ         a MedMNIST ``.npz`` (PathMNIST)
PCAM        a PatchCamelyon ``camelyonpatch_level_2_split_*_x.h5`` file, or a folder of them
==========  ====================================================================================================

Each kind has one reader, registered with :func:`register_reader` together with the test that recognises its
sources: a new format is one enum member and one decorated function here.

Splits come from the data (split column or folders) when it has them. Otherwise a seeded split is made, by
group when groups are known (a group column, or the parent image of nucleus crops), else by row, stratified,
with a logged warning.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ssmamba.data.arrays import is_pcam_folder, read_npz, read_pcam
from ssmamba.data.catalogue import Catalogue
from ssmamba.data.dataset import AUTO_VERIFY_MAX_FILES, ImageDataset
from ssmamba.data.folder import scan_folder
from ssmamba.data.hygiene import check_hygiene
from ssmamba.data.imageio import Padding
from ssmamba.data.records import ArrayItem, Record
from ssmamba.data.splits import Split, assign_splits, parse_split
from ssmamba.data.tables import read_header, read_manifest, read_points

logger = logging.getLogger(__name__)


class SourceKind(enum.Enum):
    FOLDER = "folder"
    MANIFEST = "manifest"
    POINTS = "points"
    NPZ = "npz"
    PCAM = "pcam"


@dataclass(frozen=True)
class ReadOptions:
    """What a reader needs besides the source (see :func:`load_dataset` for each field)."""

    labelled: bool = True
    classes: Sequence[str] | None = None
    path_column: str | None = None
    label_column: str = "label"
    split_column: str = "split"
    group_column: str | None = None
    crop_size: int = 32
    padding: Padding = Padding.REFLECT
    strict: bool = False


@dataclass(frozen=True)
class Reader:
    """How one kind of source is recognised (``detects``) and read into a :class:`Catalogue` (``read``)."""

    read: Callable[[Path, ReadOptions], Catalogue]
    detects: Callable[[Path], bool]


# kind -> reader; detect_kind asks them in registration order, so more specific kinds register first
READERS: dict[SourceKind, Reader] = {}


def register_reader(kind: SourceKind, detects: Callable[[Path], bool]):
    """Decorator: ``read(source, options) -> Catalogue`` reads sources of ``kind``, which ``detects(source)``
    recognises (for :func:`detect_kind`)."""

    def register(read: Callable[[Path, ReadOptions], Catalogue]):
        if kind in READERS:
            raise ValueError(f"a reader for {kind} is already registered")
        READERS[kind] = Reader(read, detects)
        return read

    return register


def _suffix(source: Path) -> str:
    return "".join(source.suffixes[-2:]).lower() if source.name.lower().endswith(".gz") else source.suffix.lower()


def _is_points_csv(source: Path) -> bool:
    if _suffix(source) != ".csv":
        return False
    header = set(read_header(source))
    return {"image", "x", "y"} <= header and "path" not in header


@register_reader(SourceKind.PCAM, lambda source: is_pcam_folder(source) if source.is_dir()
                 else _suffix(source) in (".h5", ".hdf5", ".h5.gz"))
def _read_pcam(source: Path, options: ReadOptions) -> Catalogue:
    return read_pcam(source, labelled=options.labelled, classes=options.classes)


@register_reader(SourceKind.FOLDER, Path.is_dir)
def _read_folder(source: Path, options: ReadOptions) -> Catalogue:
    return scan_folder(source, labelled=options.labelled, classes=options.classes)


@register_reader(SourceKind.POINTS, _is_points_csv)
def _read_points(source: Path, options: ReadOptions) -> Catalogue:
    return read_points(source, labelled=options.labelled, classes=options.classes, crop_size=options.crop_size,
                       padding=options.padding, image_column=options.path_column or "image",
                       label_column=options.label_column, split_column=options.split_column,
                       group_column=options.group_column, strict=options.strict)


@register_reader(SourceKind.MANIFEST, lambda source: _suffix(source) == ".csv")
def _read_manifest(source: Path, options: ReadOptions) -> Catalogue:
    return read_manifest(source, labelled=options.labelled, classes=options.classes,
                         path_column=options.path_column, label_column=options.label_column,
                         split_column=options.split_column, group_column=options.group_column,
                         strict=options.strict)


@register_reader(SourceKind.NPZ, lambda source: _suffix(source) == ".npz")
def _read_npz(source: Path, options: ReadOptions) -> Catalogue:
    return read_npz(source, labelled=options.labelled, classes=options.classes)


def detect_kind(source: Path) -> SourceKind:
    """The kind of a source from its type, suffix and (for CSVs) header: the first registered reader that
    recognises it."""
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    kind = next((kind for kind, reader in READERS.items() if reader.detects(source)), None)
    if kind is None:
        raise ValueError(f"{source}: cannot tell what kind of dataset this is (expected a folder, .csv, .npz or "
                         f".h5); pass kind=SourceKind.<...>")
    return kind


def load_dataset(source: str | Path, split: str | Split | None = None, transform: Callable | None = None, *,
                 labelled: bool = True, kind: SourceKind | None = None, classes: Sequence[str] | None = None,
                 path_column: str | None = None, label_column: str = "label", split_column: str = "split",
                 group_column: str | None = None, crop_size: int = 32, padding: Padding = Padding.REFLECT,
                 split_fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0, verify: bool | None = None,
                 strict: bool = False, cache_mb: float = 256, min_size: int | None = None,
                 allow_leakage: bool = False, replace_unreadable: bool = True) -> ImageDataset:
    """Load one split (or all, ``split=None``) of an image dataset.

    Args:
        source: folder, CSV, ``.npz`` or PCam ``.h5`` (see the module docstring).
        split: "train", "val" (also "valid"/"validation") or "test"; ``None`` for every record.
        transform: applied to each 8-bit RGB PIL image.
        labelled: ``False`` for pretraining: labels are ignored (every label is -1, ``classes`` is empty) and a
            folder may be any tree of images without class folders.
        classes: class names in a fixed order (e.g. from a checkpoint); a label outside it is an error. By
            default the sorted distinct labels (numerically when all are integers).
        group_column: the CSV column grouping rows that must share a split (e.g. ``"patient_id"``). By default
            a column named group/patient_id/patient/case_id/slide_id if present; for nucleus points, the image.
        crop_size, padding: nucleus crops (points CSVs): side in pixels, and how edges are padded (reflect by
            default, see :class:`Padding`).
        min_size: pad images with a shorter side to this many pixels (with ``padding``); ``None`` = as read.
        split_fractions, seed: (train, val, test) fractions of the seeded split made when the data has none.
        verify: decode every file before training and drop unreadable ones; ``None`` = only when the split has
            at most ``AUTO_VERIFY_MAX_FILES`` files.
        strict: raise on a missing or unreadable file instead of skipping it.
        replace_unreadable: a file that fails to decode when read is replaced by the next readable sample
            (training); ``False`` raises instead (inference, where outputs are matched to records by position).
        cache_mb: memory for decoded parent images of nucleus crops, per process (each DataLoader worker).
        allow_leakage: accept the same image in more than one split (logged); by default that raises
            :class:`~ssmamba.errors.DataLeakageError` when a split is asked for. Duplicate rows and images with
            two labels are logged (see :mod:`ssmamba.data.hygiene`).
    """
    source = Path(source)
    kind = kind or detect_kind(source)
    options = ReadOptions(labelled=labelled, classes=classes, path_column=path_column, label_column=label_column,
                          split_column=split_column, group_column=group_column, crop_size=crop_size,
                          padding=padding, strict=strict)
    catalogue = READERS[kind].read(source, options)
    if labelled:
        _check_no_empty_class(catalogue)
    wanted = parse_split(split) if split is not None else None
    records = catalogue.records
    if wanted is not None:
        records = _with_splits(catalogue, split_fractions, seed)
        check_hygiene(catalogue.name, records, allow_leakage)
        records = [r for r in records if r.split == wanted.value]
        if not records:
            present = sorted({r.split for r in catalogue.records if r.split})
            raise ValueError(f"{catalogue.name}: split {wanted.value!r} is empty (splits present: {present})")
    dataset = ImageDataset(records, catalogue.classes, transform, name=catalogue.name, skipped=catalogue.skipped,
                           strict=strict, cache_mb=cache_mb, group_name=catalogue.group_name,
                           split_name=wanted.value if wanted else None, min_size=min_size, padding=padding,
                           replace_unreadable=replace_unreadable)
    n_files = len({r.image.file for r in records if not isinstance(r.image, ArrayItem)})
    if verify or (verify is None and 0 < n_files <= AUTO_VERIFY_MAX_FILES):
        new_skips = dataset.verify()
        if new_skips and strict:
            path, reason = new_skips[0]
            raise ValueError(f"{catalogue.name}: {len(new_skips)} unreadable, e.g. {path}: {reason}")
        if not len(dataset):
            raise ValueError(f"{catalogue.name}: no readable samples left after verification; see dataset.skipped")
    if labelled:
        absent = [name for name, count in dataset.class_counts().items() if count == 0]
        if absent:
            logger.warning("%s: class(es) %s have no samples in split %s", catalogue.name, absent, dataset.split_name)
    logger.info("%s", dataset.describe())
    return dataset


def load_unlabelled(source: str | Path, split: str | Split | None = None, transform: Callable | None = None,
                    **options) -> ImageDataset:
    """:func:`load_dataset` for pretraining: labels ignored, any folder of images accepted (recursively)."""
    return load_dataset(source, split, transform, labelled=False, **options)


def _check_no_empty_class(catalogue: Catalogue) -> None:
    counts = defaultdict(int)
    for record in catalogue.records:
        counts[record.label] += 1
    empty = [name for index, name in enumerate(catalogue.classes) if counts[index] == 0]
    if empty:
        raise ValueError(f"{catalogue.name}: class(es) {empty} have no samples (after {len(catalogue.skipped)} "
                         "missing file(s) were skipped); remove them from `classes` or add data")


def _with_splits(catalogue: Catalogue, fractions: Sequence[float], seed: int) -> list[Record]:
    """The records with a split each: the data's own when every record has one, else a seeded one."""
    records = catalogue.records
    have_split = [r.split is not None for r in records]
    if all(have_split):
        _warn_group_leaks(catalogue)
        return records
    if any(have_split):
        raise ValueError(f"{catalogue.name}: some records have a split and some do not; fill the split column")
    groups = [r.group for r in records]
    if any(g is not None for g in groups):
        missing = sum(g is None for g in groups)
        if missing:
            logger.warning("%s: %d record(s) have no group; each becomes its own group", catalogue.name, missing)
        groups = [g if g is not None else f"<ungrouped {i}>" for i, g in enumerate(groups)]
    else:
        groups = None
    splits = assign_splits([r.label for r in records], groups, fractions, seed, source=catalogue.name)
    return [Record(r.image, r.label, s.value, r.group) for r, s in zip(records, splits)]


def _warn_group_leaks(catalogue: Catalogue) -> None:
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for record in catalogue.records:
        if record.group is not None:
            splits_of_group[record.group].add(record.split)
    leaking = sorted(g for g, s in splits_of_group.items() if len(s) > 1)
    if leaking:
        logger.warning("%s: %d group(s) (%s) appear in more than one split, e.g. %r: results may be optimistic",
                       catalogue.name, len(leaking), catalogue.group_name or "group", leaking[0])
