"""Running a step over many slides: finding them, and keeping going past a bad one when asked."""

from __future__ import annotations

import datetime
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from ssmamba.wsi.slide import SLIDE_SUFFIXES, SlideError

T = TypeVar("T")

# What a bad slide raises: our SlideError (unreadable, no mpp), OSError (truncated files, disk), ValueError
# (tifffile, nonsense geometry) and h5py/PIL errors, which derive from these. Programming errors still propagate.
SLIDE_FAILURES = (SlideError, OSError, ValueError, KeyError)


def find_slides(inputs: Iterable[str | Path], suffixes: frozenset[str] = SLIDE_SUFFIXES) -> list[Path]:
    """Slide files among ``inputs``: files as given, folders searched recursively for known suffixes.

    Raises:
        FileNotFoundError: an input does not exist, or nothing was found at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise FileNotFoundError(f"no slides found in {', '.join(map(str, inputs))} "
                                f"(looked for {', '.join(sorted(suffixes))})")
    names: dict[str, Path] = {}
    for path in found:  # every output is named by slide id, so two slides may not share one
        if path.stem in names and names[path.stem].resolve() != path.resolve():
            raise ValueError(f"two slides share the id {path.stem!r}: {names[path.stem]} and {path}; rename one")
        names[path.stem] = path
    return list(dict.fromkeys(found))


@dataclass
class BatchOutcome:
    """Per-slide results and failures of a batch run."""

    done: list = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def run_over_slides(slides: Iterable[Path], step: Callable[[Path], T], *, skip_errors: bool,
                    error_log: Path) -> BatchOutcome:
    """Apply ``step`` to every slide.

    With ``skip_errors`` a slide that fails is written to ``error_log`` (time, path, error and traceback) and the
    run goes on; without it the first failure is raised, after being logged too.
    """
    outcome = BatchOutcome()
    for slide_path in slides:
        try:
            outcome.done.append(step(slide_path))
        except SLIDE_FAILURES as error:
            message = f"{type(error).__name__}: {error}"
            outcome.failed.append((slide_path, message))
            error_log.parent.mkdir(parents=True, exist_ok=True)
            with open(error_log, "a") as log:
                stamp = datetime.datetime.now().isoformat(timespec="seconds")
                log.write(f"[{stamp}] {slide_path}\n  {message}\n")
                log.write("".join("    " + line for line in traceback.format_exception(error)[-3:]))
            if not skip_errors:
                raise
    return outcome
