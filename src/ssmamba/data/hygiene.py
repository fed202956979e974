"""Data hygiene at load: duplicate rows, one image with two labels, and the same image in two splits.

An image is identified by what it reads (the resolved file, plus the point of a nucleus crop or the row of an
array file) and, for whole files of equal size, by their bytes: a copy under another name is the same image.
Duplicates and conflicting labels are logged with counts and examples; an image in more than one split is leakage
(test results would be optimistic) and raises :class:`~ssmamba.errors.DataLeakageError` unless allowed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from ssmamba.data.records import ArrayItem, ImageFile, PointCrop, Record
from ssmamba.errors import DataLeakageError

logger = logging.getLogger(__name__)

__all__ = ["check_hygiene", "image_keys"]

# Hash the bytes of same-sized files only when a source has at most this many (cheap next to verification).
MAX_HASHED_FILES = 20_000


def _location(ref) -> tuple:
    if isinstance(ref, PointCrop):
        return (str(Path(ref.path).resolve()), ref.x, ref.y)
    if isinstance(ref, ArrayItem):
        return (str(Path(ref.path).resolve()), ref.key, ref.index)
    return (str(Path(ref.path).resolve()),)


def _content_ids(paths: set[str]) -> dict[str, str]:
    """``{path: sha1}`` for files that share their size with another file (the only possible copies)."""
    if len(paths) > MAX_HASHED_FILES:
        return {}
    sizes = {p: Path(p).stat().st_size for p in paths if Path(p).is_file()}
    counts = Counter(sizes.values())
    return {p: hashlib.sha1(Path(p).read_bytes()).hexdigest() for p, s in sizes.items() if counts[s] > 1}


def image_keys(records: Sequence[Record]) -> list[tuple]:
    """One key per record; records with equal keys show the same pixels."""
    locations = [_location(r.image) for r in records]
    whole_files = {loc[0] for loc, r in zip(locations, records) if isinstance(r.image, ImageFile)}
    content = _content_ids(whole_files)
    return [("sha1", content[loc[0]]) if len(loc) == 1 and loc[0] in content else loc for loc in locations]


def _examples(items: list, n: int = 3) -> str:
    return ", ".join(str(i) for i in items[:n]) + (", ..." if len(items) > n else "")


def check_hygiene(name: str, records: Sequence[Record], allow_leakage: bool = False) -> None:
    """Log duplicate rows and images with two labels; raise on an image in more than one split unless
    ``allow_leakage`` (then log it). ``records`` carry their splits."""
    keys = image_keys(records)
    rows = Counter((key, r.label, r.split) for key, r in zip(keys, records))
    duplicates = [k for k, count in rows.items() if count > 1]
    by_key: dict[tuple, list[Record]] = defaultdict(list)
    for key, record in zip(keys, records):
        by_key[key].append(record)
    example = {key: str(group[0].image) for key, group in by_key.items()}
    if duplicates:
        extra = sum(rows[k] - 1 for k in duplicates)
        logger.warning("%s: %d duplicate row(s) (the same image, label and split more than once), e.g. %s", name,
                       extra, _examples([example[k[0]] for k in duplicates]))
    conflicting = [key for key, group in by_key.items() if len({r.label for r in group}) > 1]
    if conflicting:
        logger.warning("%s: %d image(s) carry more than one label, e.g. %s; check the label column", name,
                       len(conflicting), _examples([example[k] for k in conflicting]))
    leaking = [key for key, group in by_key.items() if len({r.split for r in group}) > 1]
    if not leaking:
        return
    first = by_key[leaking[0]]
    message = (f"{name}: {len(leaking)} image(s) appear in more than one split, e.g. {example[leaking[0]]} in "
               f"{' and '.join(sorted({str(r.split) for r in first}))} "
               f"(others: {_examples([example[k] for k in leaking[1:]]) or 'none'})")
    if not allow_leakage:
        raise DataLeakageError(message + "; test results would be optimistic. Remove the copies, or pass "
                               "--allow-leakage to accept them")
    logger.warning("%s (allowed with --allow-leakage)", message)
