"""Split names, and seeded train/val/test splits when the data does not bring its own.

Patches of one patient (or nuclei of one image) are near-duplicates of each other, so a split by row leaks the
test set into training and inflates every metric. :func:`assign_splits` therefore splits by group whenever groups
are known, and only falls back to a stratified split by row, with a warning, when they are not.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


class Split(str, enum.Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


_SPLIT_ALIASES = {
    "train": Split.TRAIN, "training": Split.TRAIN,
    "val": Split.VAL, "valid": Split.VAL, "validation": Split.VAL, "dev": Split.VAL,
    "test": Split.TEST, "testing": Split.TEST,
}


def parse_split(name: str | Split) -> Split:
    """'train' / 'val' (also 'valid', 'validation', 'dev') / 'test', any case, to a :class:`Split`."""
    if isinstance(name, Split):
        return name
    try:
        return _SPLIT_ALIASES[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; expected one of {sorted(_SPLIT_ALIASES)}") from None


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1, train > 0."""
    if len(fractions) != 3:
        raise ValueError(f"split_fractions must be (train, val, test), got {tuple(fractions)}")
    train, val, test = (float(f) for f in fractions)
    if min(train, val, test) < 0 or train == 0 or abs(train + val + test - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be non-negative, train > 0, summing to 1; got {tuple(fractions)}")
    return train, val, test


def assign_splits(labels: Sequence[int], groups: Sequence[str] | None, fractions: Sequence[float], seed: int,
                  source: str = "data") -> list[Split]:
    """Seeded split of N samples into train/val/test.

    With ``groups``, every group lands in one split (``GroupShuffleSplit``; the fractions are fractions of
    *groups*, so sample counts vary with group sizes). Without, a stratified split by row, logged as a warning.
    Deterministic for a seed and an input order.
    """
    train_fraction, val_fraction, test_fraction = check_fractions(fractions)
    n = len(labels)
    indices = np.arange(n)
    if groups is not None:
        remaining, test = _group_split(indices, np.asarray(groups), test_fraction, seed, source)
        rest_fraction = val_fraction / (train_fraction + val_fraction)
        train, val = _group_split(remaining, np.asarray(groups)[remaining], rest_fraction, seed + 1, source)
    else:
        logger.warning("%s has no split and no group column: splitting by row (stratified, seed %d). "
                       "Patches of one patient or slide may land in both train and test.", source, seed)
        remaining, test = _row_split(indices, np.asarray(labels), test_fraction, seed)
        rest_fraction = val_fraction / (train_fraction + val_fraction)
        train, val = _row_split(remaining, np.asarray(labels)[remaining], rest_fraction, seed + 1)
    splits = [Split.TRAIN] * n
    for index in val:
        splits[index] = Split.VAL
    for index in test:
        splits[index] = Split.TEST
    return splits


def _group_split(indices: np.ndarray, groups: np.ndarray, held_out_fraction: float, seed: int,
                 source: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sample indices; whole groups move together."""
    if held_out_fraction == 0:
        return indices, indices[:0]
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"{source}: cannot split {n_groups} group(s) into train/val/test by group; "
                         "give a split column or more groups")
    from sklearn.model_selection import GroupShuffleSplit  # here: importing ssmamba.data should not load sklearn

    splitter = GroupShuffleSplit(n_splits=1, test_size=held_out_fraction, random_state=seed)
    kept, held_out = next(splitter.split(indices, groups=groups))
    return indices[kept], indices[held_out]


def _row_split(indices: np.ndarray, labels: np.ndarray, held_out_fraction: float,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sample indices, stratified by label when every class has at least two samples."""
    if held_out_fraction == 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split  # here: importing ssmamba.data should not load sklearn

    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and len(counts) > 1 else None
    try:
        return tuple(train_test_split(indices, test_size=held_out_fraction, random_state=seed, stratify=stratify))
    except ValueError:
        # Too few samples for a stratified split of this size (sklearn needs one per class on each side).
        return tuple(train_test_split(indices, test_size=held_out_fraction, random_state=seed))
