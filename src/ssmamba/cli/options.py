"""Every ``ssmamba`` command is rendered from one config dataclass, owned by the layer that does the work.

``@click.command(cls=ConfigCommand, config=SomeConfig)`` adds one option per field of ``SomeConfig`` and
``--config FILE.yaml``, and calls the command with the built dataclass (``cfg``) plus its own run-control options
(``--overwrite``, ``--progress``, ...). Fields become ``--field-name`` (booleans ``--x/--no-x``; ``tuple[T, ...]``
a repeatable, comma-separated option; ``dict`` a repeatable ``KEY=VALUE`` option; a field without a default a
required option; ``out`` also ``-o``); a field of dataclass type is a group of fields whose options sit side by
side. Field metadata: ``argument=True`` makes a positional argument, ``exists="file"|"dir"|"any"`` an input
path that must exist. A field's help text is its trailing ``# comment`` (or the comment block just above it).

A YAML file given with ``--config`` supplies values (a saved resolved config works: its options sit under the
command's name); options typed on the command line win. Each command writes its resolved config with
:func:`save_config` next to its outputs:

* a command whose ``--out`` is its own run folder: ``OUT/config.yaml``;
* a command whose ``--out`` is a file (``predict``, ``wsi heatmap``): ``OUT`` with the suffix ``.yaml``;
* ``wsi tile`` / ``wsi extract``, whose ``--out`` folder collects several runs: ``OUT/wsi-<command>.yaml``.

One vocabulary across commands (renamed spellings still work for one release, with a one-line warning):

* ``--model``: an architecture name only; ``--head``: a MIL head architecture;
* ``--init``: the weights a training run starts from (finetune; was ``--checkpoint``);
* ``--checkpoint``: the trained classifier under test (evaluate, predict);
* ``--encoder`` + ``--weights``: a feature extractor and the weights for it (probe, wsi extract; was
  ``--checkpoint``);
* ``--heads``: a trained MIL head folder or CV run folder (mil evaluate, wsi heatmap; was ``--model``);
* ``--img-size``: the side images are resized to for the model (was ``--input-size`` in wsi extract);
* ``--group-column``: the column that groups samples for splitting (was ``--patient-column`` in mil);
* ``--model-args`` / ``--head-args`` / ``--backbone-args KEY=VALUE``: constructor arguments (was ``--head-arg``);
* ``--balance none|sampler|loss`` everywhere (mil's ``--balance/--no-balance`` flag is now ``loss``/``none``);
* ``--out/-o`` everywhere.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import re
import types
import typing
from pathlib import Path

import click
import yaml

__all__ = ["ConfigCommand", "build_config", "config_dict", "save_config", "device", "progress_option"]


def _check_device(_ctx, param, value: str) -> str:
    """A usage error for a device this machine lacks; the value stays as typed (``auto`` is saved as ``auto``, so a
    saved config runs on a machine with or without a GPU): :func:`device` resolves it where it is used."""
    try:
        device(value)
    except (ValueError, RuntimeError) as error:
        raise click.BadParameter(str(error), param=param) from error
    return value


def device(name: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; any other device name as torch spells it."""
    from ssmamba.train.setup import resolve_device

    return str(resolve_device(name))


def _set_threads(_ctx, _param, value: int | None) -> int | None:
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


# fields whose value is checked or applied as the command line is read, in every command
_FIELD_CALLBACKS = {"device": _check_device, "threads": _set_threads}


def progress_option():
    """``--progress/--no-progress``: progress bars on the console (off for logs)."""
    return click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")


def _parse_pairs(_ctx, param, value) -> dict:
    """``("lpr=false", "directions=[row]")`` -> ``{"lpr": False, "directions": ["row"]}`` (values read as YAML)."""
    parsed = {}
    for item in value or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param=param)
        parsed[key.strip().replace("-", "_")] = yaml.safe_load(text)
    return parsed


def _items_of(item_type):
    """Callback of a list option: ``("0,1", "2")`` -> ``(0, 1, 2)``, each item converted by ``item_type``."""
    converter = click.types.convert_type(item_type)

    def callback(ctx, param, value):
        items = [part.strip() for item in value or () for part in str(item).split(",") if part.strip()]
        return tuple(converter.convert(item, param, ctx) for item in items)

    return callback


def _option_type(annotation, exists: str | None = None):
    """(click type, is_flag) for a field annotation such as ``int``, ``str | None`` or an Enum."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None, True
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return click.Choice([m.value for m in annotation]), False
    if exists:
        return click.Path(exists=True, file_okay=exists != "dir", dir_okay=exists != "file"), False
    return {int: int, float: float, str: str}.get(annotation, str), False


def _is_config(annotation) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _leaves(cls) -> list[tuple[dataclasses.Field, typing.Any, type]]:
    """(field, annotation, owner class) of every option of ``cls``; fields of a nested dataclass in its place."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        if _is_config(hints[field.name]):
            found.extend(_leaves(hints[field.name]))
        else:
            found.append((field, hints[field.name], cls))
    return found


def _comments(cls) -> dict[str, str]:
    """Help text of each field: its trailing ``# comment``, else the comment lines just above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (frozen app): options simply have no help text
        return {}
    texts, block = {}, []
    for line in lines:
        if re.match(r"^\s+#", line):
            block.append(line.strip().lstrip("#").strip())
            continue
        field = re.match(r"^\s+(\w+):[^#\n]*?(?:#\s*(.+))?$", line)
        if field and (field.group(2) or block):
            texts.setdefault(field.group(1), field.group(2).strip() if field.group(2) else " ".join(block))
        block = []
    return texts


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default.value if isinstance(field.default, enum.Enum) else field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


class _Argument(click.Argument):
    """An argument that a ``--config`` file may supply: ``nargs=-1`` with nothing typed reads the file's value."""

    def consume_value(self, ctx, opts):
        if self.nargs == -1 and opts.get(self.name) == ():
            opts = {k: v for k, v in opts.items() if k != self.name}
        return super().consume_value(ctx, opts)


def _param(field: dataclasses.Field, annotation, help_text: str | None) -> click.Parameter:
    """The click option (or argument) of one field."""
    name = field.name.replace("_", "-")
    meta = field.metadata
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    origin = typing.get_origin(annotation)
    if meta.get("argument"):
        click_type, _ = _option_type(typing.get_args(annotation)[0] if origin is tuple else annotation,
                                     meta.get("exists"))
        return _Argument([field.name], nargs=-1 if origin is tuple else 1, required=required, type=click_type)
    decls = [f"--{name}"] + (["-o"] if field.name == "out" else [])
    common = dict(required=required, show_default=not required, help=help_text)
    if origin is dict or annotation is dict:
        return click.Option([*decls, field.name], multiple=True, callback=_parse_pairs, metavar="KEY=VALUE",
                            **{**common, "help": f"{help_text} (repeatable)", "show_default": False})
    if origin is tuple:
        item_type, _ = _option_type(typing.get_args(annotation)[0])
        return click.Option([*decls, field.name], multiple=True, type=str, callback=_items_of(item_type),
                            default=_default(field), metavar="A,B,...",
                            **{**common, "help": f"{help_text} (comma-separated or repeated)"})
    click_type, is_flag = _option_type(annotation, meta.get("exists"))
    if is_flag:
        decls = [f"--{name}/--no-{name}"]
    return click.Option([*decls, field.name], default=_default(field), type=click_type,
                        callback=_FIELD_CALLBACKS.get(field.name), **common)


def config_params(cls) -> list[click.Parameter]:
    """The options of every field of ``cls`` (and of its nested dataclasses), in field order."""
    helps = {}
    params, seen = [], set()
    for field, annotation, owner in _leaves(cls):
        if owner not in helps:
            helps[owner] = _comments(owner)
        if field.name in seen:
            raise TypeError(f"{cls.__name__}: two fields named {field.name!r} would make the same option")
        seen.add(field.name)
        params.append(_param(field, annotation, helps[owner].get(field.name)))
    return params


def _flatten(cls, section: dict) -> dict:
    """A saved config's nested groups (``bags: {csv: ...}``) flattened to option names."""
    hints = typing.get_type_hints(cls)
    flat = {}
    for key, value in section.items():
        if _is_config(hints.get(key)) and isinstance(value, dict):
            flat.update(_flatten(hints[key], value))
        else:
            flat[key] = value
    return flat


def build_config(cls, values: dict):
    """The dataclass (nested ones included) from the parsed option values; other keys are ignored."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if _is_config(hints[field.name]):
            kwargs[field.name] = build_config(hints[field.name], values)
        elif field.name in values:
            value = values[field.name]
            kwargs[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_dict(cfg) -> dict:
    """``cfg`` as plain YAML-able values (enums by value, tuples as lists), nested groups as mappings."""
    return {field.name: config_dict(value) if dataclasses.is_dataclass(value := getattr(cfg, field.name))
            else _plain(value) for field in dataclasses.fields(cfg)}


def save_config(cfg, path: str | Path) -> Path:
    """Write ``cfg`` as the resolved config of the running command (under its name, so ``--config`` reads it)."""
    from ssmamba.io.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump({click.get_current_context().info_name: config_dict(cfg)},
                                           sort_keys=False, allow_unicode=True))
    return path


def _warn_renamed(ctx: click.Context, old: str, new: str) -> None:
    said = ctx.meta.setdefault("ssmamba.renamed", set())
    if old not in said:
        said.add(old)
        click.echo(f"Warning: {old} is deprecated; use {new}", err=True)


def _load_yaml(ctx: click.Context, _param, value):
    if value is None:
        return None
    command: ConfigCommand = ctx.command
    try:
        loaded = yaml.safe_load(Path(value).read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"{value} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values")
    section = loaded.get(ctx.info_name, loaded)  # a saved resolved config nests its options under the command
    if not isinstance(section, dict):
        raise click.BadParameter(f"{value}: `{ctx.info_name}` must hold a mapping of option names to values")
    section = _flatten(command.config_class, section)
    for old, (new, *_) in command.renamed.items():  # a config file with an old key name: renamed, with a warning
        old_key, new_key = old.lstrip("-").replace("-", "_"), new.lstrip("-").replace("-", "_")
        if old_key in section and old_key not in {p.name for p in command.params}:
            _warn_renamed(ctx, f"{old_key} (in {value})", new_key)
            section[new_key] = section.pop(old_key)
    known = {p.name for p in command.params}
    unknown = sorted(set(section) - known)
    if unknown:
        raise click.BadParameter(f"{value}: unknown option(s) {unknown} for `{ctx.info_name}`")
    # mappings (e.g. model_args) become the KEY=VALUE items their repeatable option takes; JSON is valid YAML
    section = {k: [f"{key}={json.dumps(v)}" for key, v in value.items()] if isinstance(value, dict) else value
               for k, value in section.items()}
    ctx.default_map = {**(ctx.default_map or {}), **section}
    return value


class ConfigCommand(click.Command):
    """A command whose options are the fields of ``config`` (see the module docstring).

    ``renamed``: old spelling -> the words that replace it, e.g. ``{"--input-size": ("--img-size",),
    "--no-balance": ("--balance", "none")}``; an old spelling on the command line (or an old key in a
    ``--config`` file) works and prints one ``Warning:`` line on stderr.
    """

    def __init__(self, *args, config: type, renamed: dict[str, tuple[str, ...] | str] | None = None, **kwargs):
        self.config_class = config
        self.renamed = {old: (new,) if isinstance(new, str) else tuple(new) for old, new in (renamed or {}).items()}
        own = kwargs.pop("params", None) or []
        load = click.Option(["--config"], type=click.Path(exists=True, dir_okay=False), callback=_load_yaml,
                            is_eager=True, expose_value=False,
                            help="YAML file of option values (a saved resolved config works); command-line "
                                 "options win.")
        fields = config_params(config)
        names = {p.name for p in fields}
        callback = kwargs.pop("callback", None)
        if callback is not None:
            callback = self._with_config(callback, names)
        super().__init__(*args, params=[load, *fields, *own], callback=callback, **kwargs)

    def _with_config(self, function, names: set[str]):
        @functools.wraps(function)
        def run(**values):
            cfg = build_config(self.config_class, {k: values.pop(k) for k in list(values) if k in names})
            return function(cfg, **values)

        return run

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten = []
        for position, word in enumerate(args):
            if word == "--":
                rewritten += args[position:]
                break
            old, sep, value = word.partition("=")
            if old in self.renamed:
                new = self.renamed[old]
                _warn_renamed(ctx, old, " ".join(new))
                rewritten += [*new[:-1], new[-1] + sep + value] if sep else list(new)
            else:
                rewritten.append(word)
        return super().parse_args(ctx, rewritten)
