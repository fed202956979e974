"""Resolve an encoder spec (an ssmamba name or checkpoint, a timm name or local timm checkpoint) to a tile embedder.

Order of resolution, first match wins:

1. a directory: an ssmamba checkpoint (``config.json`` with ``model_args``) or a timm/Hugging Face-style folder
   (``config.json`` with ``architecture`` and a ``model.safetensors`` or ``pytorch_model.bin``);
2. an ssmamba model name (``ssmamba_tiny`` ...), with ``checkpoint`` a checkpoint directory when given;
3. any timm model name, with ``checkpoint`` a weights file for it. Weights are downloaded only when
   ``pretrained=True`` (``--pretrained``): extraction never touches the network otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")


@dataclass
class Encoder:
    """A frozen tile embedder and what it expects.

    Attributes:
        model: maps (B, 3, H, W) normalised float to (B, num_features) embeddings.
        name: short name used in output folders and the ``encoder`` attribute of feature files: the
            architecture, plus the first 8 hex digits of the weights' SHA-256 when loaded from a checkpoint.
        mean, std: per-channel normalisation of [0, 1] RGB input.
        input_size: side the tiles are resized to before embedding; None keeps the tile size.
        num_features: embedding width D.
        checkpoint: weights file used, if any; ``checkpoint_sha256`` is its SHA-256 ("" for none).
        weights: "checkpoint", "pretrained" (downloaded by timm) or "random" (untrained: fine for plumbing
            tests, useless for science, and said so in every feature file).
    """

    model: nn.Module
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None
    num_features: int
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    weights: str = "random"


def file_sha256(path: str | Path, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_name(text: str) -> str:
    """A file-system-safe version of ``text`` for folder names (``hf-hub:org/model`` -> ``hf-hub_org_model``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "encoder"


def _weights_file(directory: Path) -> Path | None:
    return next((directory / name for name in _WEIGHT_FILES if (directory / name).is_file()), None)


def _from_module(model: nn.Module, name: str, checkpoint: Path | None, weights: str) -> Encoder:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    input_size = cfg.get("input_size")
    num_features = getattr(model, "num_features", None)
    if num_features is None:
        raise ValueError(f"encoder {name!r} has no num_features attribute; cannot size the feature files")
    sha256 = file_sha256(checkpoint) if checkpoint else ""
    if sha256:  # "checkpoint" folders abound; architecture + weight hash names the features unambiguously
        name = f"{name}-{sha256[:8]}"
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if weights == "random":
        warnings.warn(f"encoder {name!r} has random weights: features are only good for testing the pipeline; "
                      f"pass a pretrained checkpoint (or --pretrained for timm hub weights)", stacklevel=3)
    return Encoder(model=model, name=name, mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
                   std=tuple(cfg.get("std") or IMAGENET_STD),
                   input_size=int(input_size[-1]) if input_size else None, num_features=int(num_features),
                   checkpoint=str(checkpoint or ""), checkpoint_sha256=sha256,
                   weights=weights)


def _ssmamba_names() -> set[str]:
    import ssmamba

    return set(ssmamba.list_models())


def _load_directory(directory: Path) -> Encoder:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: a checkpoint folder needs a config.json (ssmamba or timm style)")
    config = json.loads(config_path.read_text())
    weights_path = _weights_file(directory)
    if weights_path is None:
        raise FileNotFoundError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")
    if "model_args" in config:  # written by ssmamba.save_pretrained
        import ssmamba

        model = ssmamba.create_model(checkpoint=directory, num_classes=0)
        return _from_module(model, safe_name(config.get("architecture") or "ssmamba"), weights_path, "checkpoint")
    architecture = config.get("architecture")
    if not architecture:
        raise ValueError(f"{config_path}: neither ssmamba ('model_args') nor timm ('architecture') format")
    import timm

    model = timm.create_model(architecture, pretrained=False, num_classes=0, checkpoint_path=str(weights_path),
                              **config.get("model_args", {}))
    if config.get("pretrained_cfg"):
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **config["pretrained_cfg"]}
    return _from_module(model, safe_name(architecture), weights_path, "checkpoint")


def load_encoder(spec: str | Path, checkpoint: str | Path | None = None, pretrained: bool = False,
                 input_size: int | None = None) -> Encoder:
    """Build the tile encoder named by ``spec`` (see the module docstring for the resolution order).

    Args:
        spec: ssmamba name, timm name, or checkpoint directory.
        checkpoint: weights for a named model (ssmamba checkpoint directory, or timm weights file).
        pretrained: let timm download the named model's published weights.
        input_size: resize tiles to this side before embedding, overriding the model's own input size.
    """
    spec_path = Path(spec)
    if spec_path.is_dir():
        encoder = _load_directory(spec_path)
    else:
        name = str(spec)
        checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        if checkpoint_path is not None and not checkpoint_path.exists():
            raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist")
        if name in _ssmamba_names():
            import ssmamba

            if pretrained:
                raise ValueError(f"{name} has no published weights; pass --checkpoint with a MAMIM-pretrained "
                                 f"or fine-tuned checkpoint directory")
            model = ssmamba.create_model(name, checkpoint=checkpoint_path, num_classes=0)
            weights_file = None
            if checkpoint_path is not None:
                weights_file = _weights_file(checkpoint_path) if checkpoint_path.is_dir() else checkpoint_path
        else:
            import timm

            if not timm.is_model(name) and not name.startswith("hf-hub:"):
                raise ValueError(f"unknown encoder {name!r}: not a folder, not an ssmamba model "
                                 f"({', '.join(sorted(_ssmamba_names()))}), not a timm model name")
            model = timm.create_model(name, pretrained=pretrained, num_classes=0,
                                      checkpoint_path=str(checkpoint_path) if checkpoint_path else None)
            weights_file = checkpoint_path
        weights = "checkpoint" if weights_file else ("pretrained" if pretrained else "random")
        encoder = _from_module(model, safe_name(name), weights_file, weights)
    if input_size is not None:
        encoder.input_size = int(input_size)
    return encoder


def encoder_from_module(model: nn.Module, name: str, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        input_size: int | None = None) -> Encoder:
    """Wrap any embedding module (with ``num_features``) as an :class:`Encoder`, e.g. a model built in code."""
    model.eval()
    return Encoder(model=model, name=safe_name(name), mean=tuple(mean), std=tuple(std), input_size=input_size,
                   num_features=int(getattr(model, "num_features")), weights="in-memory")
