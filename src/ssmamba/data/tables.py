"""CSV readers: a manifest of image files, and a table of nucleus points to crop around.

Manifest: ``path,label[,split][,group]`` (the path column may also be called ``image``), paths relative to the
CSV's folder; extra columns are ignored. Points: ``image,label,x,y[,split]`` with x = column and y = row in
pixels of ``image``; each row becomes a centred crop read lazily from its parent image. Nuclei of one image are
one group, so a split made here never puts one image's nuclei on both sides.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from ssmamba.data.catalogue import Catalogue, class_index, ordered_classes, unknown_label_error
from ssmamba.data.imageio import Padding
from ssmamba.data.records import UNLABELLED, ImageFile, PointCrop, Record
from ssmamba.data.splits import parse_split

logger = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "image", "filename", "file")
# Columns taken as the group when none is named, in this order: never split by row when one of these exists.
GROUP_COLUMNS = ("group", "patient_id", "patient", "case_id", "case", "slide_id", "slide")


def read_header(csv_path: Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"{csv_path}: empty CSV (no header row)")
    return [column.strip() for column in header]


def _rows(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs, values stripped; blank lines dropped."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        rows = []
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items() if isinstance(v, str)}))
    if not rows:
        raise ValueError(f"{csv_path}: the CSV has a header but no rows")
    return rows


def _require(csv_path: Path, header: Sequence[str], column: str, what: str) -> None:
    if column not in header:
        raise ValueError(f"{csv_path}: no {what} column {column!r}; columns are {list(header)}")


def _pick_path_column(csv_path: Path, header: Sequence[str], path_column: str | None) -> str:
    if path_column is not None:
        _require(csv_path, header, path_column, "path")
        return path_column
    for candidate in PATH_COLUMNS:
        if candidate in header:
            return candidate
    raise ValueError(f"{csv_path}: no image path column (looked for {PATH_COLUMNS}); columns are {list(header)}")


def _pick_group_column(csv_path: Path, header: Sequence[str], group_column: str | None,
                       default: str | None = None) -> str | None:
    if group_column is not None:
        _require(csv_path, header, group_column, "group")
        return group_column
    found = next((c for c in GROUP_COLUMNS if c in header), default)
    if found is not None and found != default:
        logger.info("%s: using column %r as the group (patient/slide) of each row", csv_path, found)
    return found


def _labels_and_classes(csv_path: Path, rows, label_column: str, classes: Sequence[str] | None,
                        labelled: bool) -> tuple[list[int], list[str]]:
    if not labelled:
        return [UNLABELLED] * len(rows), []
    for line, row in rows:
        if not row.get(label_column):
            raise ValueError(f"{csv_path}, line {line}: empty {label_column!r}")
    classes = list(classes) if classes is not None else ordered_classes(row[label_column] for _, row in rows)
    index = class_index(classes)
    labels = []
    for line, row in rows:
        label = row[label_column]
        if label not in index:
            raise unknown_label_error(str(csv_path), f"line {line}", label, classes)
        labels.append(index[label])
    return labels, classes


def _split_of(csv_path: Path, line: int, row: dict[str, str], split_column: str | None) -> str | None:
    if split_column is None:
        return None
    try:
        return parse_split(row.get(split_column, "")).value
    except ValueError as error:
        raise ValueError(f"{csv_path}, line {line}, column {split_column!r}: {error}") from None


def read_manifest(csv_path: Path, *, labelled: bool = True, classes: Sequence[str] | None = None,
                  path_column: str | None = None, label_column: str = "label", split_column: str = "split",
                  group_column: str | None = None, strict: bool = False) -> Catalogue:
    """Records of a ``path,label[,split][,group]`` CSV; rows whose file is missing are skipped (or raise)."""
    header = read_header(csv_path)
    path_column = _pick_path_column(csv_path, header, path_column)
    if labelled:
        _require(csv_path, header, label_column, "label")
    split_column_used = split_column if split_column in header else None
    group_column = _pick_group_column(csv_path, header, group_column)
    rows = _rows(csv_path)
    labels, classes = _labels_and_classes(csv_path, rows, label_column, classes, labelled)
    root = csv_path.parent
    records, skipped = [], []
    for (line, row), label in zip(rows, labels):
        if not row.get(path_column):
            raise ValueError(f"{csv_path}, line {line}: empty {path_column!r}")
        path = root / row[path_column]
        if not path.is_file():
            if strict:
                raise FileNotFoundError(f"{csv_path}, line {line}: {path} does not exist")
            skipped.append((str(path), f"missing file (line {line})"))
            continue
        group = (row.get(group_column) or None) if group_column else None
        records.append(Record(ImageFile(path), label, _split_of(csv_path, line, row, split_column_used), group))
    if skipped:
        logger.warning("%s: %d file(s) listed but missing, e.g. %s", csv_path, len(skipped), skipped[0][0])
    return Catalogue(str(csv_path), records, classes, skipped, group_column)


def read_points(csv_path: Path, *, labelled: bool = True, classes: Sequence[str] | None = None,
                crop_size: int = 32, padding: Padding = Padding.REFLECT, image_column: str = "image",
                label_column: str = "label", split_column: str = "split", group_column: str | None = None,
                strict: bool = False) -> Catalogue:
    """Nucleus-centred crops from an ``image,label,x,y[,split]`` CSV; the group defaults to the image."""
    if crop_size < 1:
        raise ValueError(f"crop_size must be a positive number of pixels, got {crop_size}")
    header = read_header(csv_path)
    for column, what in ((image_column, "image"), ("x", "x (column)"), ("y", "y (row)")):
        _require(csv_path, header, column, what)
    if labelled:
        _require(csv_path, header, label_column, "label")
    split_column_used = split_column if split_column in header else None
    group_column = _pick_group_column(csv_path, header, group_column, default=image_column)
    rows = _rows(csv_path)
    labels, classes = _labels_and_classes(csv_path, rows, label_column, classes, labelled)
    root = csv_path.parent
    exists: dict[str, bool] = {}
    records, skipped = [], []
    for (line, row), label in zip(rows, labels):
        image = row.get(image_column)
        if not image:
            raise ValueError(f"{csv_path}, line {line}: empty {image_column!r}")
        try:
            x, y = float(row["x"]), float(row["y"])
        except ValueError:
            raise ValueError(f"{csv_path}, line {line}: x={row['x']!r}, y={row['y']!r} are not numbers") from None
        path = root / image
        if image not in exists:
            exists[image] = path.is_file()
            if not exists[image]:
                if strict:
                    raise FileNotFoundError(f"{csv_path}, line {line}: {path} does not exist")
                skipped.append((str(path), f"missing file (first at line {line})"))
        if not exists[image]:
            continue
        split = _split_of(csv_path, line, row, split_column_used)
        records.append(Record(PointCrop(path, x, y, crop_size, padding), label, split, row.get(group_column) or None))
    if skipped:
        logger.warning("%s: %d image(s) listed but missing, e.g. %s", csv_path, len(skipped), skipped[0][0])
    return Catalogue(str(csv_path), records, classes, skipped, group_column)
