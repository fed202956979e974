"""Writes that are complete or absent: a failed or interrupted write never replaces good data.

:func:`atomic_directory` builds a folder (a checkpoint) in a hidden sibling and renames it into place only when
every file in it was written and flushed; :func:`atomic_write_text` does the same for one file. A full disk, a file
size limit, an exception in the writer or a killed process leave the previous folder or file as it was (at worst
plus a hidden ``.NAME.tmp-*`` sibling, which is never read).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory", "atomic_write_text", "TEMP_MARK"]

TEMP_MARK = ".tmp-"  # in the names of temporary siblings


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _recover(target: Path) -> None:
    """Tidy what a killed writer left beside ``target``: if it died between the two renames of a swap, put the
    previous version back; then delete leftover temporaries. (One writer per target at a time is assumed.)"""
    leftovers = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if leftovers and not target.exists():
        os.rename(leftovers.pop(), target)
    for path in leftovers + list(target.parent.glob(f".{target.name}{TEMP_MARK}*")):
        shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target`` to write into; when the block ends normally it replaces
    ``target``. When the block raises (or the process dies), ``target`` is left exactly as it was.

    The swap is two renames (old folder aside, new one in), so for an instant between them ``target`` is absent
    (the previous version then sits in a hidden ``.NAME.old-*`` sibling, put back by the next save if the process
    died there); no reader ever sees a partial folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    temporary = _sibling(target, TEMP_MARK)
    temporary.mkdir()
    finished = False
    try:
        yield temporary
        _fsync_tree(temporary)
        finished = True
    finally:
        if not finished:
            shutil.rmtree(temporary, ignore_errors=True)
    if target.is_dir() and not target.is_symlink():
        previous = _sibling(target, ".old-")
        os.rename(target, previous)
        os.rename(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(temporary, target)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: the old file survives a failed write."""
    path = Path(path)
    temporary = _sibling(path, TEMP_MARK)
    finished = False
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        finished = True
    finally:
        if not finished:
            temporary.unlink(missing_ok=True)
    return path
