"""Multiple-instance learning heads over bags of tile embeddings, and their training/evaluation.

Heads share one interface (see :class:`ssmamba.mil.base.MILHead`)::

    head = create_mil_head("abmil", in_dim=768, num_classes=2)
    logits = head(features, coords)                       # (B, N, D), (B, N, 2) -> (B, C)
    logits, attention = head.predict_bag(features, coords)  # one bag, streamed in chunks

Each head is one class registered by name (:func:`~ssmamba.mil.registry.register_mil_head`); the built-in ones are
imported with the first name used from this package (or the first registry lookup), not with the package itself,
so that ``mil --help`` imports no torch. A head trains on the engine every training run shares
(:mod:`ssmamba.mil.training`) and scores bags whole (:mod:`ssmamba.mil.inference`); cross-validation and reports
over bags are in :mod:`ssmamba.workflows.mil_cv`.
"""

import importlib

# public name -> module that defines it, imported on first use (PEP 562)
_EXPORTS = {
    **dict.fromkeys(("MILHead", "MILOutput", "subsample_bag"), "ssmamba.mil.base"),
    **dict.fromkeys(("load_mil_model", "save_mil_model"), "ssmamba.mil.checkpoint"),
    **dict.fromkeys(("MIL_HEADS", "create_mil_head", "mil_head_class", "register_mil_head"), "ssmamba.mil.registry"),
}

__all__ = ["MIL_HEADS", "MILHead", "MILOutput", "create_mil_head", "load_mil_model", "mil_head_class",
           "register_mil_head", "save_mil_model", "subsample_bag"]


def __getattr__(name: str):
    if name in _EXPORTS:
        importlib.import_module("ssmamba.mil.registry").import_builtin_heads()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
