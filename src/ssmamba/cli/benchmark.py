"""``ssmamba benchmark``: same-budget leaderboards of SSMamba, its ablations and timm baselines."""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex

import click

from ssmamba.cli.options import ConfigCommand, save_config
from ssmamba.workflows.config import BenchmarkConfig  # no torch: `--help` stays fast


@click.command(cls=ConfigCommand, config=BenchmarkConfig)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar over cells.")
@click.option("--report-only", is_flag=True, help="Compute nothing: write the leaderboard of the finished cells.")
def benchmark(cfg: BenchmarkConfig, progress: bool, report_only: bool) -> None:
    """Fine-tune every entry with the same recipe and budget on one data set, over several seeds, and rank them.

    Each (entry, seed) cell is written to OUT/cells/ atomically and never recomputed: rerun the same command
    after an interruption, or with more --seeds/--entries, and only the missing cells run. Several processes
    may share one --out (each claims a cell before computing it). Writes OUT/leaderboard.{md,json,png}.

    Example: ssmamba benchmark --data data.csv --entries ssmamba,ssmamba-mamim,resnet18 --seeds 0,1,2 --epochs 10
    """
    from ssmamba.cli.console import console_logging
    from ssmamba.workflows.benchmark import run_benchmark
    from ssmamba.workflows.benchmark.cells import RecipeMismatchError

    console_logging(progress)
    try:
        if not cfg.data:
            raise click.UsageError("--data is required: a labelled data set with train/val/test splits")
        path = run_benchmark(cfg, progress=progress, command=command_line(cfg), report_only=report_only)
        save_config(cfg, path.parent / "config.yaml")
    except RecipeMismatchError as error:
        raise click.ClickException(str(error)) from error
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(path.read_text())
    click.echo(f"leaderboard: {path} (+ .json, .png)")


def command_line(cfg: BenchmarkConfig) -> str:
    """The ``ssmamba benchmark`` command that reproduces ``cfg``: every option that differs from its default."""
    default = BenchmarkConfig(data=cfg.data)
    words = ["ssmamba", "benchmark"]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in ("data", "out") or value != getattr(default, field.name):
            if isinstance(value, dict):  # a repeatable KEY=VALUE option
                for key, item in value.items():
                    words += [f"--{field.name.replace('_', '-')}", f"{key}={json.dumps(item)}"]
                continue
            if isinstance(value, tuple):
                value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            elif isinstance(value, enum.Enum):
                value = value.value
            words += [f"--{field.name.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(w) for w in words)
