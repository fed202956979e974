"""The MIL heads by name: each head class registers itself, and ``create_mil_head`` builds one by that name.

A new head is one module with one decorated class::

    @register_mil_head("my_head")
    class MyHead(MILHead):
        ...

plus its module's name in ``BUILTIN_HEAD_MODULES``, imported on the first lookup (so that importing the package, or
``mil --help``, imports no torch); ``mil train --head``, the saved-head format and the tests that run over every
head pick it up from :data:`MIL_HEADS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ssmamba.mil.base import MILHead

__all__ = ["MIL_HEADS", "BUILTIN_HEAD_MODULES", "register_mil_head", "import_builtin_heads", "head_names",
           "mil_head_class", "create_mil_head"]

MIL_HEADS: dict[str, type[MILHead]] = {}
BUILTIN_HEAD_MODULES = ("ssmamba.mil.abmil", "ssmamba.mil.transmil", "ssmamba.mil.mamba_mil")


def import_builtin_heads() -> dict[str, type[MILHead]]:
    """Import the built-in heads' modules (each registers its head; imported once) and return :data:`MIL_HEADS`."""
    for module in BUILTIN_HEAD_MODULES:
        importlib.import_module(module)
    return MIL_HEADS


def head_names() -> list[str]:
    """The registered heads' names, the built-in ones included, sorted."""
    return sorted(import_builtin_heads())


def register_mil_head(name: str) -> Callable[[type[MILHead]], type[MILHead]]:
    """Class decorator: make ``cls`` the head called ``name`` (``cls.head_name``); a name is registered once."""

    def register(cls: type[MILHead]) -> type[MILHead]:
        if not (isinstance(cls, type) and issubclass(cls, MILHead)):
            raise TypeError(f"register_mil_head({name!r}) decorates MILHead subclasses, not {cls!r}")
        if name in MIL_HEADS and MIL_HEADS[name] is not cls:
            raise ValueError(f"MIL head {name!r} is already registered ({MIL_HEADS[name].__qualname__})")
        cls.head_name = name
        MIL_HEADS[name] = cls
        return cls

    return register


def mil_head_class(name: str) -> type[MILHead]:
    if name not in import_builtin_heads():
        raise ValueError(f"unknown MIL head {name!r}; choose one of {', '.join(MIL_HEADS)}")
    return MIL_HEADS[name]


def create_mil_head(name: str, in_dim: int, num_classes: int, **kwargs) -> MILHead:
    """Build a head by name (``abmil``, ``transmil``, ``mamba_mil``, ...); ``kwargs`` go to its constructor."""
    return mil_head_class(name)(in_dim=in_dim, num_classes=num_classes, **kwargs)
