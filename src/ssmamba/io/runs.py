"""The run folder of a command: never silently reused, checked writable before any work, and told what was
skipped."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ssmamba.errors import RunFolderError
from ssmamba.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["claim_run_dir", "check_writable", "run_lock", "write_skipped", "SKIPPED_NAME"]

SKIPPED_NAME = "skipped.csv"


def _holds_a_run(directory: Path) -> list[str]:
    """Names in ``directory`` that belong to a run; a log and skip lists alone are what an attempt that failed
    before any work leaves, and do not count."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name != "log.txt" and not (p.name.startswith("skipped") and p.suffix == ".csv"))


def check_writable(directory: Path, option: str = "--out") -> None:
    """Create ``directory`` (and parents) and write a probe file in it, or raise :class:`RunFolderError`."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise RunFolderError(f"cannot write to {option} {directory}: {error.strerror or error}; "
                             "choose a folder you can write to") from error


def _protected(directory: Path) -> bool:
    """Folders --overwrite never deletes: the working directory, its parents, the home folder."""
    resolved, cwd = directory.resolve(), Path.cwd().resolve()
    return resolved == Path.home().resolve() or resolved == cwd or resolved in cwd.parents


def claim_run_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False,
                  option: str = "--out") -> Path:
    """Make ``out`` the folder of a new run (or of the run being resumed) before any work starts.

    * ``resume``: ``out`` must exist; its files are continued, not replaced.
    * a missing or empty folder is created and used (so is one holding only ``log.txt`` / ``skipped*.csv``, left
      by an attempt that failed before any work: the new attempt appends to that log).
    * a folder holding anything else (another run) is refused, unless ``overwrite``: then its contents are
      deleted first, so files of two runs never mix.

    The folder is checked writable in every case. Returns ``out`` as a :class:`Path`.
    """
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: give only one")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{option} {out} is a file, not a folder; choose another {option}")
    if resume:
        if not out.is_dir():
            raise RunFolderError(f"cannot resume: {option} {out} does not exist")
    elif out.is_dir() and (held := _holds_a_run(out)):
        if not overwrite:
            raise RunFolderError(f"{option} {out} already holds files ({', '.join(held[:3])}, ...): pass --resume to "
                                 f"continue that run, --overwrite to replace it, or choose another {option}")
        if _protected(out):
            raise RunFolderError(f"--overwrite would delete {out} (the working or home folder); choose a subfolder")
        logger.warning("--overwrite: deleting the previous contents of %s", out)
        for child in out.iterdir():  # the contents, not the folder: a run_lock on it stays with it
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    check_writable(out, option)
    return out


@contextmanager
def run_lock(out: str | Path, *, resume: bool = False, option: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on the folder ``out`` while a run writes into it, so that a second process given the
    same folder (two jobs of a sweep, a run started twice) is refused before it reads or deletes anything, instead of
    two runs writing one folder. Take it before :func:`claim_run_dir`. The lock is the OS's (``flock`` on the
    folder), so it goes when the process ends, killed or not, and ``--resume`` works after a crash; where there is no
    ``flock`` (Windows) no lock is taken. A folder that does not exist is created unless ``resume`` (then
    :func:`claim_run_dir` reports it)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    out = Path(out)
    if not out.is_dir():
        if resume or out.exists():  # nothing to lock: claim_run_dir says what is wrong
            yield
            return
        check_writable(out, option)
    handle = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"{option} {out} is in use by another running process; wait for it to end or "
                                 f"choose another {option}") from None
        yield
    finally:
        os.close(handle)  # releases the lock


def write_skipped(path: str | Path, skipped: Sequence[tuple[str, str]]) -> Path | None:
    """Write every ``(file, reason)`` that was left out to ``path`` (CSV) and log the count; None if none."""
    if not skipped:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows((str(p), str(r)) for p, r in skipped)
    path = atomic_write_text(path, buffer.getvalue())
    logger.warning("skipped %d unreadable file(s), e.g. %s; full list in %s", len(skipped), skipped[0][0], path)
    return path
