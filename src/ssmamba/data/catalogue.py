"""What every reader returns before splitting: records, class names, skips; plus class-name helpers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ssmamba.data.records import Record


@dataclass
class Catalogue:
    """All records of one source (every split), as read.

    ``group_name`` names what a group is (e.g. ``"patient_id"``) for the run log; ``None`` when records carry
    no groups.
    """

    name: str
    records: list[Record]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    group_name: str | None = None


def ordered_classes(labels: Iterable[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when all are integers ("2" before "10"), else sorted."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def class_index(classes: Sequence[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(classes)}


def unknown_label_error(source: str, where: str, label: str, classes: Sequence[str]) -> ValueError:
    return ValueError(f"{source}, {where}: label {label!r} is not one of the classes {list(classes)}")
