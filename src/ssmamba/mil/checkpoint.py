"""Saving and loading trained MIL heads, in the one checkpoint-folder format (:mod:`ssmamba.io.pretrained`).

``<folder>/mil_model.safetensors`` holds the weights and ``<folder>/mil_config.json`` what rebuilds the head::

    {"head": "abmil", "in_dim": 768, "num_classes": 2, "head_kwargs": {...}, "class_names": [...],
     "ssmamba_version": "0.1.0", ...extra (features folder, fold, ...)}
"""

from __future__ import annotations

from pathlib import Path

from ssmamba.errors import CheckpointError
from ssmamba.io.pretrained import load_pretrained, save_pretrained
from ssmamba.mil.base import MILHead
from ssmamba.mil.registry import create_mil_head

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "save_mil_model", "load_mil_model"]

WEIGHTS_NAME, CONFIG_NAME = "mil_model.safetensors", "mil_config.json"


def save_mil_model(head: MILHead, directory: str | Path, *, head_kwargs: dict, class_names: list[str],
                   head_name: str | None = None, extra: dict | None = None) -> Path:
    """Write ``mil_model.safetensors`` + ``mil_config.json`` (everything needed to rebuild the head), atomically.

    ``head_name`` defaults to the name the head's class is registered under."""
    config = {"head": head_name or head.head_name, "in_dim": head.in_dim, "num_classes": head.num_classes,
              "head_kwargs": {k: getattr(v, "value", v) for k, v in head_kwargs.items()},
              "class_names": list(class_names), **(extra or {})}
    return save_pretrained(directory, head.state_dict(), config, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME)


def load_mil_model(directory: str | Path, device: str = "cpu") -> tuple[MILHead, dict]:
    """Rebuild a head saved by :func:`save_mil_model`; returns it (in eval mode) and its config."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}; expected a folder written by `ssmamba mil train`")
    config, state = load_pretrained(directory, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME)
    if len(config.get("class_names") or []) != config["num_classes"]:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {len(config.get('class_names') or [])} class_names for "
                              f"a head with {config['num_classes']} outputs")
    head = create_mil_head(config["head"], config["in_dim"], config["num_classes"], **config["head_kwargs"])
    head.load_state_dict(state)
    return head.to(device).eval(), config
