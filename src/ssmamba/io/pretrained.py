"""One checkpoint folder format for every trained module: backbones and MIL heads alike.

A checkpoint is a folder with the weights as safetensors (never pickle: loading one executes no code) and a JSON
config beside them that says how to rebuild the module::

    <folder>/model.safetensors  config.json          (backbones: ssmamba.models.save_pretrained)
    <folder>/mil_model.safetensors  mil_config.json  (MIL heads: ssmamba.mil.save_mil_model)

:func:`save_pretrained` writes the folder atomically (complete or absent; a failed save keeps the previous one) and
stamps the config with the ssmamba version; :func:`load_pretrained` reads both files back, with one clear
:class:`~ssmamba.errors.CheckpointError` naming the file for damaged JSON, truncated weights or NaN/inf tensors.
What the config holds, and how a module is rebuilt from it, is the caller's business.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ssmamba._version import __version__
from ssmamba.errors import CheckpointError
from ssmamba.io.atomic import atomic_directory

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "save_pretrained", "load_pretrained", "read_config", "read_weights",
           "check_finite_state"]

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def save_pretrained(directory: str | Path, state: dict[str, torch.Tensor], config: dict, *,
                    weights_name: str = WEIGHTS_NAME, config_name: str = CONFIG_NAME) -> Path:
    """Write ``state`` (a state dict) and ``config`` (plus ``ssmamba_version``) into ``directory``, atomically.

    Other files in an existing ``directory`` are dropped. Returns the directory.
    """
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config = {**config, "ssmamba_version": __version__}
    with atomic_directory(directory) as partial:  # complete or absent: a failed save keeps the previous one
        try:
            save_file(state, str(partial / weights_name), metadata={"format": "pt"})
        except SafetensorError as error:  # a failed write (full disk, size limit)
            raise CheckpointError(f"could not write checkpoint {directory} ({error}): is the disk full? The "
                                  "previous checkpoint there, if any, is intact") from error
        (partial / config_name).write_text(json.dumps(config, indent=2, default=str))
    return directory


def read_config(config_path: str | Path) -> dict:
    """The JSON object in ``config_path``; :class:`FileNotFoundError` when absent, :class:`CheckpointError` when
    it is not a JSON object."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"no {config_path.name} in {config_path.parent}: expected {config_path}")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error}); the checkpoint is damaged") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} holds {type(config).__name__}, not a JSON object; the checkpoint is "
                              "damaged")
    return config


def check_finite_state(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``source`` if any floating tensor of ``state`` has NaN or inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {source} has non-finite (NaN/inf) weights in {len(bad)} tensor(s), e.g. "
                              f"{bad[0]!r}; it cannot give meaningful predictions. Use an earlier checkpoint.")


def read_weights(weights_path: str | Path, source: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked finite; errors name ``source`` (default: the file)."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"no weights file at {weights_path}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read weights {weights_path}: {error}; the file is truncated or not "
                              "safetensors") from error
    check_finite_state(state, source or weights_path)
    return state


def load_pretrained(directory: str | Path, *, weights_name: str = WEIGHTS_NAME,
                    config_name: str = CONFIG_NAME) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, state)`` of a folder written by :func:`save_pretrained`."""
    directory = Path(directory)
    return read_config(directory / config_name), read_weights(directory / weights_name, directory)
