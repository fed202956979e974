"""Multiple-instance learning heads over bags of tile embeddings, and their training/evaluation.

Heads share one interface (see :class:`ssmamba.mil.base.MILHead`)::

    head = create_mil_head("abmil", in_dim=768, num_classes=2)
    logits = head(features, coords)                       # (B, N, D), (B, N, 2) -> (B, C)
    logits, attention = head.predict_bag(features, coords)  # one bag, streamed in chunks
"""

from __future__ import annotations

import importlib

from ssmamba.mil.base import MILHead, MILOutput, subsample_bag

# name -> (module, class); imported on demand so ABMIL works even where the scan kernels are unavailable.
MIL_HEADS = {
    "abmil": ("ssmamba.mil.abmil", "ABMIL"),
    "transmil": ("ssmamba.mil.transmil", "TransMIL"),
    "mamba_mil": ("ssmamba.mil.mamba_mil", "MambaMIL"),
}


def mil_head_class(name: str) -> type[MILHead]:
    if name not in MIL_HEADS:
        raise ValueError(f"unknown MIL head {name!r}; choose one of {', '.join(MIL_HEADS)}")
    module, attribute = MIL_HEADS[name]
    return getattr(importlib.import_module(module), attribute)


def create_mil_head(name: str, in_dim: int, num_classes: int, **kwargs) -> MILHead:
    """Build a head by name (``abmil``, ``transmil``, ``mamba_mil``); ``kwargs`` go to its constructor."""
    return mil_head_class(name)(in_dim=in_dim, num_classes=num_classes, **kwargs)


__all__ = ["MIL_HEADS", "MILHead", "MILOutput", "create_mil_head", "mil_head_class", "subsample_bag"]
