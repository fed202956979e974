"""The run folder of a command: never silently reused, checked writable before any work, and told what was
skipped."""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ssmamba.errors import RunFolderError
from ssmamba.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["claim_run_dir", "check_writable", "write_skipped", "SKIPPED_NAME"]

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
        shutil.rmtree(out)
    check_writable(out, option)
    return out


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
