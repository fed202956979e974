"""Checks of run settings made when a config is built, so a bad value fails before any data is read."""

from __future__ import annotations

__all__ = ["require_positive", "require_fraction"]


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive(cfg, *names: str) -> None:
    """Each named field of ``cfg`` must be a number > 0 (``None`` passes: the field is optional)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ValueError(f"{_option(name)} must be > 0, got {value!r}")


def require_fraction(cfg, name: str, low_open: bool = True) -> None:
    """Field ``name`` of ``cfg`` must lie in (0, 1) (``[0, 1)`` with ``low_open=False``)."""
    value = getattr(cfg, name)
    if not ((0 < value if low_open else 0 <= value) and value < 1):
        raise ValueError(f"{_option(name)} must be in {'(' if low_open else '['}0, 1), got {value!r}")
