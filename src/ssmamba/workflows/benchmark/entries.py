"""Benchmark entries: a model, its architecture arguments, and whether MAMIM pretraining comes first.

An entry is written on the command line as a preset name or as ``MODEL[+mamim]``:

* presets (the SSMamba ablations, built on the benchmark's ``--backbone``, ``ssmamba_tiny_fast`` by default):

  ================  ======================================================================================
  ``ssmamba``        MAMIM pretraining on the training images, then fine-tuning: the full method
  ``ssmamba-mamim``  the same architecture fine-tuned from random init (what MAMIM adds)
  ``ssmamba-dms``    MAMIM + fine-tune with DMS reduced to one direction (row-major, forward) and one scale
                     (no pooled-grid scan, a single 3x3 depthwise conv): what directions and scales add
  ``ssmamba-lpr``    MAMIM + fine-tune without the Local Perception Residual
  ``plain-mamba``    all three off: one direction, one scale, no LPR, random init
  ================  ======================================================================================

* ``MODEL``: any ssmamba variant or timm architecture (``resnet18``, ``convnext_atto``, ``mambaout_femto``,
  ``efficientnet_b0``, ``vit_tiny_patch16_224``), fine-tuned from random init; ``MODEL+mamim`` pretrains an ssmamba
  variant with MAMIM first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmamba.models.factory import is_ssmamba
from ssmamba.models.ssmamba import FIELDS_ADDED_LATER, architecture
from ssmamba.train.config import DEFAULT_MODEL

__all__ = ["Entry", "PRESETS", "parse_entry", "saved_entry", "SINGLE_DIRECTION_SCALE", "NO_LPR"]

SINGLE_DIRECTION_SCALE = {"directions": ["row"], "scales": [1], "conv_kernels": [3]}
NO_LPR = {"lpr": False}


@dataclass(frozen=True)
class Entry:
    """One row of a leaderboard.

    Attributes:
        name: as written on the command line and shown in the tables.
        model: architecture (an ssmamba variant or a timm name).
        model_args: architecture arguments (ablation switches for ssmamba).
        mamim: pretrain with MAMIM on the training images before fine-tuning.
        family: ``"ssmamba"`` or ``"baseline"`` (timm models): the paired comparison is against the best baseline.
        description: one line for the leaderboard.
        architecture: an ssmamba entry's whole ``SSMambaConfig`` (its variant's with ``model_args``), so that a
            cell computed before a default of the variant changed is not taken for one of today's model.
    """

    name: str
    model: str
    model_args: dict = field(default_factory=dict, hash=False)
    mamim: bool = False
    family: str = "baseline"
    description: str = ""
    architecture: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        out = {"name": self.name, "model": self.model, "model_args": dict(self.model_args), "mamim": self.mamim,
               "family": self.family, "description": self.description}
        return {**out, "architecture": dict(self.architecture)} if self.architecture else out


# name -> (MAMIM first, architecture arguments, description); built on the benchmark's SSMamba backbone
PRESETS: dict[str, tuple[bool, dict, str]] = {
    "ssmamba": (True, {}, "MAMIM pretraining + fine-tuning (the full method)"),
    "ssmamba-mamim": (False, {}, "same architecture, random init (no MAMIM)"),
    "ssmamba-dms": (True, SINGLE_DIRECTION_SCALE, "MAMIM + fine-tune, DMS cut to one direction and one scale"),
    "ssmamba-lpr": (True, NO_LPR, "MAMIM + fine-tune, no Local Perception Residual"),
    "plain-mamba": (False, {**SINGLE_DIRECTION_SCALE, **NO_LPR}, "one direction, one scale, no LPR, random init"),
}


def parse_entry(text: str, backbone: str = DEFAULT_MODEL, backbone_args: dict | None = None) -> Entry:
    """An :class:`Entry` from a preset name or ``MODEL[+mamim]``; unknown models raise ``ValueError``.

    ``backbone_args``: architecture arguments of every ssmamba entry (``conv_block=inverted``), under the presets'
    own switches."""
    text, base = text.strip(), dict(backbone_args or {})
    if text in PRESETS:
        mamim, args, description = PRESETS[text]
        args = {**base, **args}
        return Entry(text, backbone, args, mamim, "ssmamba", f"{description} ({backbone})",
                     architecture(backbone, args))
    model, plus, stage = text.partition("+")
    if plus and stage != "mamim":
        raise ValueError(f"entry {text!r}: the only stage that can be added is '+mamim'")
    if is_ssmamba(model):
        return Entry(text, model, base, bool(plus), "ssmamba",
                     f"{model}, {'MAMIM + fine-tune' if plus else 'random init'}", architecture(model, base))
    if plus:
        raise ValueError(f"entry {text!r}: MAMIM pretraining is for ssmamba models, not {model!r}")
    import timm

    if not timm.is_model(model):
        raise ValueError(f"entry {text!r} is not a preset ({', '.join(PRESETS)}), an ssmamba model or a timm "
                         "architecture")
    return Entry(text, model, {}, False, "baseline", f"timm {model}, random init")


def saved_entry(entry: dict) -> dict:
    """An entry as a cell's ``cell.json`` records it, in today's terms: a cell written before entries recorded
    their architecture was built with the variant's fields as they were then (``FIELDS_ADDED_LATER``)."""
    if entry.get("family") != "ssmamba" or "architecture" in entry:
        return entry
    return {**entry, "architecture": architecture(entry["model"], entry["model_args"], set(FIELDS_ADDED_LATER))}
