"""Warn once per reason when a backend falls back to a slower one.

A model calls the scan thousands of times per epoch; the user needs to hear once that the fast kernel is missing
(and why), not once per call.
"""

from __future__ import annotations

import warnings


class ScanFallbackWarning(RuntimeWarning):
    """A faster selective-scan backend was wanted but could not be used; a slower one runs instead."""


_warned: set[str] = set()


def warn_once(key: str, message: str, category: type[Warning] = ScanFallbackWarning) -> bool:
    """Emit `message` the first time `key` is seen in this process; return whether it was emitted."""
    if key in _warned:
        return False
    _warned.add(key)
    warnings.warn(message, category, stacklevel=3)
    return True
