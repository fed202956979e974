"""SSMamba: a self-supervised hybrid state-space model for pathology image classification.

``import ssmamba`` is cheap and changes nothing outside the package: no environment variable, no matplotlib
backend, no logging handler, and it imports neither torch nor timm. ``ssmamba.create_model`` and the other entry
points below load :mod:`ssmamba.models` on first use; importing :mod:`ssmamba.models` (which any of them does)
registers the SSMamba variants with ``timm.create_model``.

The package root is for users only: ``__version__`` (from :mod:`ssmamba._version`) and the lazy aliases below. No
module of the package imports it (``tests/test_layers.py``); see docs/architecture.md for the layers.
"""

from __future__ import annotations

import importlib

from ssmamba._version import __version__

# name -> module that defines it, imported on first access (PEP 562)
_LAZY_ATTRIBUTES = {name: "ssmamba.models" for name in ("create_model", "list_models", "load_config",
                                                        "save_pretrained")}
_SUBPACKAGES = ("cli", "data", "eval", "io", "mil", "models", "ops", "ssl", "train", "workflows", "wsi")

__all__ = ["__version__", "create_model", "list_models", "load_config", "save_pretrained"]


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES) | set(_SUBPACKAGES))
