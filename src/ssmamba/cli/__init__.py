"""The ``ssmamba`` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import importlib
import os

import click

from ssmamba._version import __version__

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
    "benchmark": ("ssmamba.cli.benchmark", "benchmark"),
    "wsi": ("ssmamba.cli.wsi", "wsi"),
    "mil": ("ssmamba.cli.mil", "mil"),
}


class _LazyGroup(click.Group):
    def main(self, *args, **kwargs):
        # OpenMP threads that spin while they wait steal the cores that other processes (or a DataLoader) need; on a
        # busy 2-core machine that made training 5-10x slower (benchmarks/results/scan.md). Passive waiting costs
        # little when the machine is idle. OpenMP reads it once, when torch loads it, so it is set here, before any
        # command is imported (``import ssmamba`` imports no torch); a user's own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        """Run the sub-command; a user error becomes one ``Error:`` line (its traceback with ``--debug``)."""
        from ssmamba.cli.errors import one_line, user_errors

        try:
            return super().invoke(ctx)
        except user_errors() as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(one_line(error)) from error

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssmamba")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """SSMamba: self-supervised hybrid state-space models for pathology images."""
    from ssmamba.cli.console import clean_warnings

    clean_warnings(ctx)


if __name__ == "__main__":
    main()
