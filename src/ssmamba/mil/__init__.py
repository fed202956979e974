"""Multiple-instance learning heads over bags of tile embeddings, and their training/evaluation.

Heads share one interface (see :class:`ssmamba.mil.base.MILHead`)::

    head = create_mil_head("abmil", in_dim=768, num_classes=2)
    logits = head(features, coords)                       # (B, N, D), (B, N, 2) -> (B, C)
    logits, attention = head.predict_bag(features, coords)  # one bag, streamed in chunks

Each head is one class registered by name (:func:`~ssmamba.mil.registry.register_mil_head`); importing this
package imports the three built-in ones. A head trains on the engine every training run shares
(:mod:`ssmamba.mil.training`) and scores bags whole (:mod:`ssmamba.mil.inference`); cross-validation and reports
over bags are in :mod:`ssmamba.workflows.mil_cv`.
"""

from ssmamba.mil import abmil, mamba_mil, transmil  # noqa: F401 (each registers its head)
from ssmamba.mil.base import MILHead, MILOutput, subsample_bag
from ssmamba.mil.checkpoint import load_mil_model, save_mil_model
from ssmamba.mil.registry import MIL_HEADS, create_mil_head, mil_head_class, register_mil_head

__all__ = ["MIL_HEADS", "MILHead", "MILOutput", "create_mil_head", "load_mil_model", "mil_head_class",
           "register_mil_head", "save_mil_model", "subsample_bag"]
