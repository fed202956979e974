"""Image folder trees: ``root/<class>/**/*.png``, ``root/<split>/<class>/**``, or any tree when unlabelled.

Split folders are recognised by name (train, val/valid/validation, test). Files are listed recursively and sorted,
so record order (and any seeded split made from it) does not depend on the file system.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ssmamba.data.catalogue import Catalogue, class_index, ordered_classes, unknown_label_error
from ssmamba.data.imageio import IMAGE_SUFFIXES, is_image_file
from ssmamba.data.records import UNLABELLED, ImageFile, Record
from ssmamba.data.splits import parse_split

logger = logging.getLogger(__name__)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _split_folders(root: Path) -> dict[str, Path] | None:
    """{split: folder} when every subfolder of root is a split name, else None."""
    subdirs = _subdirs(root)
    if not subdirs:
        return None
    splits = {}
    for folder in subdirs:
        try:
            split = parse_split(folder.name).value
        except ValueError:
            return None
        if split in splits:
            raise ValueError(f"{root}: folders {splits[split].name!r} and {folder.name!r} both mean split {split!r}")
        splits[split] = folder
    return splits


def scan_folder(root: Path, *, labelled: bool = True, classes: Sequence[str] | None = None) -> Catalogue:
    """Records of an image folder tree; the class is the first folder level below the root (or the split folder)."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    split_folders = _split_folders(root)
    parts = split_folders.items() if split_folders else [(None, root)]
    if not labelled:
        records = [Record(ImageFile(path), UNLABELLED, split) for split, folder in parts
                   for path in _images_under(folder)]
        if not records:
            raise ValueError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        return Catalogue(str(root), records, [])

    by_class: dict[str, list[tuple[str | None, Path]]] = {}
    for split, folder in parts:
        class_folders = _subdirs(folder)
        if not class_folders:
            raise ValueError(f"{folder}: no class subfolders (expected {folder}/<class>/*.png); "
                             "for a flat folder of unlabelled images use labelled=False")
        loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
        if loose:
            logger.warning("%s: %d image(s) outside any class folder are ignored, e.g. %s", folder, len(loose),
                           loose[0].name)
        for class_folder in class_folders:
            images = _images_under(class_folder)
            if not images and split is None:
                raise ValueError(f"{class_folder}: class {class_folder.name!r} holds no image files")
            by_class.setdefault(class_folder.name, []).extend((split, path) for path in images)
    empty = [name for name, items in by_class.items() if not items]
    if empty:
        raise ValueError(f"{root}: class(es) {empty} hold no image files in any split")

    classes = list(classes) if classes is not None else ordered_classes(by_class)
    index = class_index(classes)
    records = []
    for name in ordered_classes(by_class):
        if name not in index:
            raise unknown_label_error(str(root), f"folder {name!r}", name, classes)
        records.extend(Record(ImageFile(path), index[name], split) for split, path in by_class[name])
    return Catalogue(str(root), records, classes)
