"""Resolve an encoder spec (an ssmamba name or checkpoint, a timm name or local timm checkpoint) to a tile embedder.

Order of resolution, first match wins:

1. a directory: an ssmamba checkpoint (``config.json`` with ``model_args``) or a timm/Hugging Face-style folder
   (``config.json`` with ``architecture`` and a ``model.safetensors`` or ``pytorch_model.bin``);
2. an ssmamba model name (``ssmamba_tiny`` ...), with ``checkpoint`` a checkpoint directory when given;
3. any timm model name, with ``checkpoint`` a weights file for it. Weights are downloaded only when
   ``pretrained=True`` (``--pretrained``): extraction never touches the network otherwise.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssmamba.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ssmamba.models.factory import create_model, list_models

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")


class InputSizeSource(enum.Enum):
    """Why tiles are embedded at the size they are (stored in every feature file as ``input_size_source``)."""

    TILE = "tile"  # the encoder takes any size: tiles are embedded as they were cut, never resampled
    MODEL = "model"  # a fixed-size model (a ViT): tiles are resized to the size it was built for
    OPTION = "option"  # ``--img-size`` (``load_encoder(input_size=...)``) asked for this size


@dataclass
class Encoder:
    """A frozen tile embedder and what it expects.

    Attributes:
        model: maps (B, 3, H, W) normalised float to (B, num_features) embeddings.
        architecture: the model's name, file-system safe (``ssmamba_tiny``, ``vit_small_patch16_224``).
        mean, std: per-channel normalisation of [0, 1] RGB input.
        input_size: the side the model was built or trained for (its ``pretrained_cfg``), None if unknown.
        num_features: embedding width D.
        fixed_input_size: the model only accepts ``input_size`` (ViTs with a fixed position table); models that
            take any size (ssmamba, CNNs) embed tiles at the tile size unless ``requested_input_size`` is set.
        requested_input_size: resize tiles to this side whatever the model (``--img-size``).
        checkpoint: weights file used, if any.
        weights_sha256: SHA-256 of the checkpoint file, or of the weights themselves (state dict) otherwise,
            so random and downloaded weights are told apart too.
        weights: "checkpoint", "pretrained" (downloaded by timm), "random" (untrained: fine for plumbing tests,
            useless for science, and said so in every feature file) or "in-memory".
    """

    model: nn.Module
    architecture: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None
    num_features: int
    fixed_input_size: bool = False
    requested_input_size: int | None = None
    checkpoint: str = ""
    weights_sha256: str = ""
    weights: str = "random"

    @property
    def name(self) -> str:
        """Architecture and the first 8 hex digits of the weights' hash: ``ssmamba_tiny-1a2b3c4d``
        (``ssmamba_tiny-random-1a2b3c4d`` for untrained weights)."""
        marker = "random-" if self.weights == "random" else ""
        return f"{self.architecture}-{marker}{self.weights_sha256[:8]}"

    def tile_input_size(self, tile_size: int) -> tuple[int, InputSizeSource]:
        """The side tiles of ``tile_size`` px are embedded at, and why."""
        if self.requested_input_size is not None:
            return self.requested_input_size, InputSizeSource.OPTION
        if self.fixed_input_size and self.input_size is not None:
            return self.input_size, InputSizeSource.MODEL
        return tile_size, InputSizeSource.TILE


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


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a model's parameters and buffers."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _accepts_any_size(model: nn.Module, cfg: dict) -> bool:
    """timm marks models with a fixed position table ``fixed_input_size``; ViTs built with ``dynamic_img_size``
    take any size again. ssmamba models and CNNs have no such mark."""
    return not cfg.get("fixed_input_size", False) or bool(getattr(model, "dynamic_img_size", False))


def _from_module(model: nn.Module, name: str, checkpoint: Path | None, weights: str) -> Encoder:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    input_size = cfg.get("input_size")
    num_features = getattr(model, "num_features", None)
    if num_features is None:
        raise ValueError(f"encoder {name!r} has no num_features attribute; cannot size the feature files")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    encoder = Encoder(model=model, architecture=name, mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
                      std=tuple(cfg.get("std") or IMAGENET_STD),
                      input_size=int(input_size[-1]) if input_size else None, num_features=int(num_features),
                      fixed_input_size=not _accepts_any_size(model, cfg), checkpoint=str(checkpoint or ""),
                      weights_sha256=file_sha256(checkpoint) if checkpoint else state_dict_sha256(model),
                      weights=weights)
    if weights == "random":
        warnings.warn(f"encoder {encoder.name!r} has random weights: features are only good for testing the "
                      f"pipeline; pass a pretrained checkpoint (or --pretrained for timm hub weights)", stacklevel=3)
    return encoder


def _ssmamba_names() -> set[str]:
    return set(list_models())


def _load_directory(directory: Path) -> Encoder:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: a checkpoint folder needs a config.json (ssmamba or timm style)")
    config = json.loads(config_path.read_text())
    weights_path = _weights_file(directory)
    if weights_path is None:
        raise FileNotFoundError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")
    if "model_args" in config:  # written by ssmamba.save_pretrained
        model = create_model(checkpoint=directory, num_classes=0)
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


def _load_named(name: str, checkpoint_path: Path | None, pretrained: bool) -> tuple[nn.Module, Path | None]:
    """The model called ``name`` (ssmamba, else timm) and the weights file it was loaded from, if any."""
    if name in _ssmamba_names():
        if pretrained:
            raise ValueError(f"{name} has no published weights; pass --weights with a MAMIM-pretrained "
                             f"or fine-tuned checkpoint directory")
        model = create_model(name, checkpoint=checkpoint_path, num_classes=0)
        if checkpoint_path is not None and checkpoint_path.is_dir():
            return model, _weights_file(checkpoint_path)
        return model, checkpoint_path
    import timm

    if not timm.is_model(name) and not name.startswith("hf-hub:"):
        raise ValueError(f"unknown encoder {name!r}: not a folder, not an ssmamba model "
                         f"({', '.join(sorted(_ssmamba_names()))}), not a timm model name")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0,
                              checkpoint_path=str(checkpoint_path) if checkpoint_path else None)
    return model, checkpoint_path


def load_encoder(spec: str | Path, checkpoint: str | Path | None = None, pretrained: bool = False,
                 input_size: int | None = None) -> Encoder:
    """Build the tile encoder named by ``spec`` (see the module docstring for the resolution order).

    Random weights (a name without ``checkpoint`` or ``pretrained``) are drawn with a fixed seed, so the same
    command gives the same features, and the same feature folder, every time.

    Args:
        spec: ssmamba name, timm name, or checkpoint directory.
        checkpoint: weights for a named model (ssmamba checkpoint directory, or timm weights file).
        pretrained: let timm download the named model's published weights.
        input_size: resize tiles to this side before embedding, whatever the model; by default tiles keep
            their size for encoders that take any size and are resized to the model's size for fixed-size ones.
    """
    spec_path = Path(spec)
    if spec_path.is_dir():
        encoder = _load_directory(spec_path)
    else:
        checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        if checkpoint_path is not None and not checkpoint_path.exists():
            raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, weights_file = _load_named(str(spec), checkpoint_path, pretrained)
        weights = "checkpoint" if weights_file else ("pretrained" if pretrained else "random")
        encoder = _from_module(model, safe_name(str(spec)), weights_file, weights)
    if input_size is not None:
        encoder.requested_input_size = int(input_size)
    return encoder


def encoder_from_module(model: nn.Module, name: str, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        input_size: int | None = None) -> Encoder:
    """Wrap any embedding module (with ``num_features``) as an :class:`Encoder`, e.g. a model built in code.

    ``input_size`` resizes tiles to that side; None embeds them at the tile size.
    """
    model.eval()
    return Encoder(model=model, architecture=safe_name(name), mean=tuple(mean), std=tuple(std), input_size=input_size,
                   num_features=int(getattr(model, "num_features")), requested_input_size=input_size,
                   weights_sha256=state_dict_sha256(model), weights="in-memory")
