"""The ``ssmamba`` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import importlib

import click

from ssmamba import __version__

# (module, attribute) of every sub-command; imported lazily so `ssmamba --help` stays fast
# and a broken optional dependency of one command cannot take the others down.
_COMMANDS = {
    "info": ("ssmamba.cli.info", "info"),
    "pretrain": ("ssmamba.cli.train", "pretrain"),
    "finetune": ("ssmamba.cli.train", "finetune"),
    "evaluate": ("ssmamba.cli.evaluate", "evaluate"),
    "predict": ("ssmamba.cli.evaluate", "predict"),
    "probe": ("ssmamba.cli.evaluate", "probe"),
    "demo": ("ssmamba.cli.demo", "demo"),
    "wsi": ("ssmamba.cli.wsi", "wsi"),
    "mil": ("ssmamba.cli.mil", "mil"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssmamba")
@click.pass_context
def main(ctx: click.Context) -> None:
    """SSMamba: self-supervised hybrid state-space models for pathology images."""
    from ssmamba.cli.console import clean_warnings

    clean_warnings(ctx)


if __name__ == "__main__":
    main()
