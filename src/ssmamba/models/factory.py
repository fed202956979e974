"""Build, save and load SSMamba models and any timm architecture; register SSMamba with timm.

A checkpoint is a directory with ``model.safetensors`` (weights) and ``config.json``::

    {"architecture": "ssmamba_tiny", "model_args": {...SSMambaConfig...}, "num_classes": 4, "in_chans": 3,
     "global_pool": "avg", "drop_rate": 0.0, "drop_path_rate": 0.1,
     "pretrained_cfg": {"mean": [...], "std": [...], "input_size": [3, 224, 224], "mpp": 0.5,
                        "class_names": [...], ...},
     "ssmamba_version": "0.1.0"}

A timm architecture (``resnet18``, ``convnext_atto``, ``mambaout_femto``, ``vit_tiny_patch16_224``, ...) is saved
the same way with ``"library": "timm"`` and its constructor arguments as ``model_args``, so every command that
takes an ssmamba checkpoint takes a timm one too. timm models are built with random weights: nothing is downloaded.

A model name means that architecture, even where a folder of the same name exists: a string is read as a checkpoint
path only when it is not a registered model name (``create_model("./ssmamba_test")``, ``create_model(
"runs/ft/best")``); a ``pathlib.Path`` always is. ``checkpoint=`` says it explicitly.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from torch import nn

from ssmamba.errors import CheckpointError
from ssmamba.io import pretrained as checkpoint_folder
from ssmamba.io.pretrained import CONFIG_NAME, WEIGHTS_NAME
from ssmamba.models.ssmamba import (EVAL_PREPROCESSING, FIELDS_ADDED_LATER, SSMamba, SSMambaConfig, build_ssmamba,
                                    feature_extractor, variant_configs)

__all__ = ["create_model", "list_models", "save_pretrained", "load_config", "CheckpointMismatchError",
           "DEFAULT_PRETRAINED_CFG"]

# H&E-agnostic defaults (ImageNet statistics), as most pathology encoders use, and ssmamba's eval preprocessing
# (bilinear short-side resize, centre crop); replaced by what a run trained with.
DEFAULT_PRETRAINED_CFG = {**EVAL_PREPROCESSING, "mpp": None, "class_names": None}

# SSMamba constructor arguments saved in config.json next to model_args (the SSMambaConfig), with their defaults.
_SSMAMBA_SAVED_ARGS = {"global_pool": "avg", "drop_rate": 0.0, "drop_path_rate": 0.0}


class CheckpointMismatchError(RuntimeError):
    """The weights in a checkpoint do not fit the architecture they are being loaded into."""


def list_models() -> list[str]:
    return sorted(variant_configs())


def is_ssmamba(arch: str) -> bool:
    """Whether ``arch`` names an SSMamba variant (rather than a timm architecture)."""
    return arch in variant_configs()


def _classifier_prefix(model: nn.Module) -> str | None:
    """State-dict prefix of the classifier (``"head."``, ``"fc."``, ``"head.fc."``), or None if it has none."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if classifier is None:
        return None
    return next((f"{name}." for name, module in model.named_modules() if module is classifier and name), None)


def load_config(checkpoint: str | Path) -> dict:
    """Read ``config.json`` of a checkpoint directory (or the directory of a ``model.safetensors`` file)."""
    path = Path(checkpoint)
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} next to checkpoint {checkpoint}: expected {config_path}")
    config = checkpoint_folder.read_config(config_path)
    if not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{config_path} has no \"architecture\": not an ssmamba checkpoint config")
    _check_class_names(config, config_path)
    return config


def _check_class_names(config: dict, config_path: Path) -> None:
    """``pretrained_cfg.class_names`` must be distinct strings, one per output of the head (when it has one)."""
    names = (config.get("pretrained_cfg") or {}).get("class_names")
    if names is None:
        return
    n_outputs = config.get("num_classes", 0)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise CheckpointError(f"{config_path}: class_names must be a list of distinct strings, got {names!r}")
    if n_outputs and len(names) != n_outputs:
        raise CheckpointError(f"{config_path}: {len(names)} class_names {names} for a head with {n_outputs} "
                              "outputs; fix class_names or use the config.json saved with these weights")


def _load_weights(model: nn.Module, checkpoint: Path, expected: str, allow_head_mismatch: bool) -> None:
    weights_path = checkpoint / WEIGHTS_NAME if checkpoint.is_dir() else checkpoint
    state = checkpoint_folder.read_weights(weights_path, checkpoint)
    head = _classifier_prefix(model)
    if allow_head_mismatch and head:  # a new number of classes (or none: embeddings) on a trained encoder
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith(head) or (k in own and own[k].shape == v.shape)}
        state.update({k: v for k, v in own.items() if k.startswith(head) and k not in state})
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of the wrong shape
        raise CheckpointMismatchError(f"checkpoint {checkpoint} does not fit {expected}: "
                                      f"{' '.join(str(error).split()[:40])}") from error
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint} does not fit {expected}: missing keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}. The checkpoint's config.json describes the architecture it "
            "expects; load it with create_model(checkpoint=PATH) without overriding architecture arguments.")


def _names_a_checkpoint(name: str | os.PathLike) -> bool:
    """Whether ``name`` (given without ``checkpoint=``) is a checkpoint path rather than a model name: a Path
    always is; a string only when no registry knows it and the path exists (a folder ``./ssmamba_test/`` in the
    working directory does not hijack ``create_model("ssmamba_test")``)."""
    if isinstance(name, os.PathLike):
        return True
    import timm

    return not (is_ssmamba(name) or timm.is_model(name)) and Path(name).exists()


def create_model(name: str | Path | None = None, *, checkpoint: str | Path | None = None, num_classes: int | None = None,
                 features_only: bool = False, out_indices: int | tuple[int, ...] = (0, 1, 2, 3),
                 feature_cls: str | type = "list", pretrained_cfg: dict | None = None, img_size: int | None = None,
                 **kwargs) -> nn.Module:
    """Create an SSMamba variant or a timm architecture, or load a checkpoint directory.

    Examples::

        create_model("ssmamba_tiny", num_classes=4)            # random init
        create_model(checkpoint="runs/pretrain/checkpoint")      # the architecture saved with the weights
        create_model("ssmamba_tiny", checkpoint=..., num_classes=2)   # pretrained encoder, new head
        create_model("convnext_atto", num_classes=2)             # any timm architecture, random init
        create_model("runs/ft/best")                             # a path that is not a model name: a checkpoint

    ``kwargs`` are ``SSMambaConfig`` fields (ablation switches, e.g. ``lpr=False``) or ``SSMamba`` arguments
    (``drop_path_rate``, ``drop_rate``, ``in_chans``, ``global_pool``); for a timm architecture, its
    constructor's arguments. ``num_classes=0`` gives pooled embeddings. ``img_size`` builds timm models with a
    fixed input size (ViTs) for that size; models that take any size (SSMamba, CNNs) do not need it.
    ``features_only`` returns timm's feature wrapper of an SSMamba model (``feature_cls`` ``'list'``, ``'getter'``,
    ...; ``out_indices`` stage indices or an int n for the last n stages).
    """
    if name is not None and checkpoint is None and _names_a_checkpoint(name):
        name, checkpoint = None, name
    saved = load_config(checkpoint) if checkpoint is not None else None
    arch = name or (saved or {}).get("architecture")
    if arch is None:
        raise ValueError("give a model name or a checkpoint")
    if saved is not None and name is not None and name != saved["architecture"]:
        raise CheckpointMismatchError(f"checkpoint {checkpoint} holds a {saved['architecture']!r} model, not {name!r}")
    if is_ssmamba(arch):
        model, base, arch_kwargs, saved_classes, classes = _build_ssmamba(arch, saved, num_classes, kwargs)
    else:
        model, base, arch_kwargs, saved_classes, classes = _build_timm(arch, saved, num_classes, img_size, kwargs)
    model._architecture = arch
    model._checkpoint = None if checkpoint is None else str(checkpoint)  # named in errors about its outputs
    merged_cfg = {**(saved or {}).get("pretrained_cfg", {}), **(pretrained_cfg or {})}
    if saved is not None and classes != saved_classes and "class_names" not in (pretrained_cfg or {}):
        merged_cfg["class_names"] = None  # a new head: the saved names belong to the old one
    model.pretrained_cfg = {**DEFAULT_PRETRAINED_CFG, **merged_cfg, "architecture": arch}
    model.default_cfg = model.pretrained_cfg  # timm's older name for it
    if checkpoint is not None:
        changed = sorted(k for k, v in arch_kwargs.items() if _jsonable(v) != base.get(k, _jsonable(v)))
        if changed:
            raise CheckpointMismatchError(f"architecture arguments {changed} differ from those saved in "
                                          f"{checkpoint}/config.json; drop them to load the checkpoint")
        _load_weights(model, Path(checkpoint), f"{arch} {base}", allow_head_mismatch=classes != saved_classes)
    if not features_only:
        return model
    if is_ssmamba(arch):
        return feature_extractor(model, out_indices, feature_cls)
    raise ValueError(f"features_only is for ssmamba models; for {arch!r} use timm.create_model(features_only=True)")


def _jsonable(value):
    """``value`` as config.json stores it (tuples become lists), for comparing arguments with saved ones."""
    return json.loads(json.dumps(value, default=str))


# SSMamba constructor arguments that are not SSMambaConfig fields (drop_path_rate, in_chans, ...)
_SSMAMBA_ARGS = frozenset(inspect.signature(SSMamba).parameters) - {"cfg", "num_classes"}


def _build_ssmamba(arch: str, saved: dict | None, num_classes: int | None, kwargs: dict):
    cfg_fields = set(SSMambaConfig.__dataclass_fields__)
    arch_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in cfg_fields}
    if saved is not None:
        base = saved.get("model_args") or {}
        if not isinstance(base, dict) or set(base) - cfg_fields:
            raise CheckpointError(f"config.json of {arch} has model_args that are not SSMambaConfig fields: "
                                  f"{sorted(set(base) - cfg_fields) if isinstance(base, dict) else base!r}")
        base = {**FIELDS_ADDED_LATER, **base}  # a config.json written before a field existed loads as what it is
        kwargs.setdefault("in_chans", saved.get("in_chans", 3))
        for key, default in _SSMAMBA_SAVED_ARGS.items():
            kwargs.setdefault(key, saved.get(key, default))
        saved_classes = saved.get("num_classes", 0)
    else:
        base, saved_classes = variant_configs()[arch].to_dict(), 1000
    unknown = sorted(set(kwargs) - _SSMAMBA_ARGS)
    if unknown:
        raise ValueError(f"unknown model argument(s) {unknown} for {arch}: valid ones are SSMambaConfig fields "
                         f"({', '.join(sorted(cfg_fields))}) and {', '.join(sorted(_SSMAMBA_ARGS))}")
    config = SSMambaConfig(**{**base, **arch_kwargs})
    classes = saved_classes if num_classes is None else num_classes
    arch_kwargs = {k: config.to_dict()[k] for k in arch_kwargs}
    return build_ssmamba(arch, cfg=config, num_classes=classes, **kwargs), base, arch_kwargs, saved_classes, classes


# Arguments that change how a timm model trains, not what its weights are: never a mismatch with a checkpoint.
_TIMM_TRAINING_ARGS = {"drop_rate", "drop_path_rate", "drop_block_rate", "proj_drop_rate", "attn_drop_rate",
                       "pos_drop_rate", "patch_drop_rate"}


def _build_timm(arch: str, saved: dict | None, num_classes: int | None, img_size: int | None, kwargs: dict):
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"unknown model {arch!r}: not an ssmamba variant ({', '.join(list_models())}) and not a "
                         "timm architecture (timm.list_models() lists them)")
    base = dict((saved or {}).get("model_args") or {})
    default_cfg = timm.models.get_pretrained_cfg(arch)
    if img_size and getattr(default_cfg, "fixed_input_size", False) and "img_size" not in base:
        kwargs.setdefault("img_size", int(img_size))
    saved_classes = (saved or {}).get("num_classes", 1000)
    classes = saved_classes if num_classes is None else num_classes
    args = {**base, **kwargs}
    if saved is not None:
        args.setdefault("in_chans", saved.get("in_chans", 3))
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=classes, **args)
    except TypeError as error:  # timm passes unknown keyword arguments on to the model's constructor
        raise ValueError(f"model arguments {sorted(args)} do not fit timm architecture {arch!r}: {error}") from error
    model._model_args = {k: _jsonable(v) for k, v in args.items() if k != "in_chans"}
    model.in_chans = args.get("in_chans", 3)
    arch_kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_TRAINING_ARGS and k != "in_chans"}
    return model, base, arch_kwargs, saved_classes, classes


def save_pretrained(model: nn.Module, directory: str | Path, pretrained_cfg: dict | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``directory``, atomically: the folder is built beside
    ``directory`` and renamed into place, so it is complete or absent and a failed save (a full disk) leaves the
    previous checkpoint there intact (:func:`ssmamba.io.pretrained.save_pretrained`, which MIL heads use too).
    Other files in an existing ``directory`` are dropped. Returns the directory.

    ``model`` is an SSMamba model or a timm model built by :func:`create_model` (not a ``features_only``
    wrapper: save the model it was made from)."""
    if isinstance(model, SSMamba):  # model_args is the architecture; the other constructor arguments go beside it
        library, model_args = {}, model.cfg.to_dict()
        constructor_args = {"global_pool": model.global_pool.pool_type, "drop_rate": model.drop_rate,
                            "drop_path_rate": model.drop_path_rate}
    elif hasattr(model, "_model_args"):
        library, model_args, constructor_args = {"library": "timm"}, model._model_args, {}
    else:
        raise TypeError(f"save_pretrained takes models built by ssmamba.create_model, not {type(model).__name__}")
    config = {
        "architecture": getattr(model, "_architecture", None) or model.pretrained_cfg.get("architecture"),
        **library,
        "model_args": model_args,
        "num_classes": model.num_classes,
        "in_chans": model.in_chans,
        **constructor_args,
        "pretrained_cfg": {**model.pretrained_cfg, **(pretrained_cfg or {})},
    }
    return checkpoint_folder.save_pretrained(directory, model.state_dict(), config)
