"""Click options generated from a run's config dataclass, plus ``--config FILE.yaml``.

Every field becomes ``--field-name`` (booleans ``--x/--no-x``; ``tuple[T, ...]`` fields a repeatable option, e.g.
``--seed 0 --seed 1``); a YAML file given with ``--config`` supplies
defaults, and options typed on the command line win. The dataclass stays the one place a setting is defined.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from pathlib import Path

import click
import yaml

__all__ = ["config_options", "build_config", "device_option", "threads_option", "progress_option"]


def _parse_device(_ctx, param, value: str) -> str:
    from ssmamba.train.setup import resolve_device

    try:
        return str(resolve_device(value))
    except (ValueError, RuntimeError) as error:
        raise click.BadParameter(str(error), param=param) from error


def device_option():
    """``--device auto|cpu|cuda|cuda:N``, resolved (``auto`` -> ``cuda`` or ``cpu``) before the command runs."""
    return click.option("--device", default="auto", show_default=True, callback=_parse_device,
                        help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...")


def _set_threads(_ctx, _param, value: int | None) -> int | None:
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


def threads_option():
    """``--threads N``: the CPU threads torch uses for this command (default: torch's choice)."""
    return click.option("--threads", type=click.IntRange(min=1), default=None, callback=_set_threads,
                        help="CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the number of cores].")


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


def _option_type(annotation):
    """(click type, is_flag) for a field annotation such as ``int``, ``str | None`` or an Enum."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None, True
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return click.Choice([m.value for m in annotation]), False
    return {int: int, float: float, str: str}.get(annotation, str), False


def _load_yaml(ctx: click.Context, _param, value):
    if value is None:
        return None
    try:
        loaded = yaml.safe_load(Path(value).read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"{value} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values")
    section = loaded.get(ctx.info_name, loaded)  # a run's saved config.yaml nests its options under the command
    known = {p.name for p in ctx.command.params}
    unknown = sorted(set(section) - known)
    if unknown:
        raise click.BadParameter(f"{value}: unknown option(s) {unknown} for `{ctx.info_name}`")
    # mappings (e.g. model_args) become the KEY=VALUE items their repeatable option takes; JSON is valid YAML
    section = {k: [f"{key}={json.dumps(v)}" for key, v in value.items()] if isinstance(value, dict) else value
               for k, value in section.items()}
    ctx.default_map = {**(ctx.default_map or {}), **section}
    return value


def _field_comments(cls) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the dataclass source: the option's help text."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (frozen app): options simply have no help text
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, re.M)}


def config_options(cls, skip: tuple[str, ...] = ()):
    """Decorator adding one option per field of dataclass ``cls`` and ``--config``."""
    hints = typing.get_type_hints(cls)
    help_texts = _field_comments(cls)

    def decorator(func):
        for field in reversed(dataclasses.fields(cls)):
            if field.name in skip:
                continue
            if typing.get_origin(hints[field.name]) is dict or hints[field.name] is dict:
                func = click.option(f"--{field.name.replace('_', '-')}", field.name, multiple=True,
                                    callback=_parse_pairs, metavar="KEY=VALUE",
                                    help=(help_texts.get(field.name) or "") + " (repeatable)")(func)
                continue
            if typing.get_origin(hints[field.name]) is tuple:
                item_type, _ = _option_type(typing.get_args(hints[field.name])[0])
                func = click.option(f"--{field.name.replace('_', '-')}", field.name, multiple=True,
                                    type=str, callback=_items_of(item_type), default=field.default,
                                    show_default=True,
                                    metavar="A,B,...",
                                    help=(help_texts.get(field.name) or "") + " (comma-separated or repeated)")(func)
                continue
            click_type, is_flag = _option_type(hints[field.name])
            default = field.default.value if isinstance(field.default, enum.Enum) else field.default
            name = field.name.replace("_", "-")
            decls = [f"--{name}/--no-{name}"] if is_flag else [f"--{name}"]
            func = click.option(*decls, field.name, default=default, type=click_type, show_default=True,
                                help=help_texts.get(field.name))(func)
        return click.option("--config", type=click.Path(exists=True, dir_okay=False), callback=_load_yaml,
                            is_eager=True, expose_value=False,
                            help="YAML file of option values (a run's config.yaml works); command-line options win.")(func)

    return decorator


def build_config(cls, values: dict):
    """The dataclass from the parsed option values (extra keys, such as ``resume``, are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})
