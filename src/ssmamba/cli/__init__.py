"""The ``ssmamba`` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import importlib
import os

import click

from ssmamba._version import __version__

# name -> (module, attribute, summary) of every sub-command. Imported lazily, so that `ssmamba --help` lists them
# without importing torch (each summary begins the command's own help, as tests/cli/test_cli.py checks) and a broken
# optional dependency of one command cannot take the others down.
_COMMANDS = {
    "info": ("ssmamba.cli.info", "info", "Print versions, threads and the selective-scan backends available here."),
    "pretrain": ("ssmamba.cli.train", "pretrain",
                 "MAMIM self-supervised pretraining on your own images (labels ignored)."),
    "finetune": ("ssmamba.cli.train", "finetune",
                 "Supervised fine-tuning from a MAMIM checkpoint (--init) or from scratch."),
    "evaluate": ("ssmamba.cli.evaluate", "evaluate",
                 "Metrics with bootstrap 95% CIs, confusion matrix and ROC curves for one split."),
    "predict": ("ssmamba.cli.evaluate", "predict",
                "Class probabilities for a folder, a CSV or a single image, written to a CSV."),
    "probe": ("ssmamba.cli.evaluate", "probe", "Linear probe and kNN on frozen features."),
    "demo": ("ssmamba.cli.demo", "demo", "MAMIM pretraining -> fine-tuning -> evaluation -> report."),
    "benchmark": ("ssmamba.cli.benchmark", "benchmark",
                  "Fine-tune every entry with the same recipe and budget on one data set, over several seeds, and "
                  "rank them."),
    "wsi": ("ssmamba.cli.wsi", "wsi", "Whole-slide images: tiling, tile embedding, heatmaps."),
    "mil": ("ssmamba.cli.mil", "mil", "Multiple-instance learning on slide (or image) bags of tile features."),
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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # --help, usage errors, Ctrl-C: click's own, and user_errors() would import torch to match them
        except user_errors() as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(one_line(error)) from error

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries above: importing every command would take seconds (torch)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)])


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
