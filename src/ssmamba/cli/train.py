"""``ssmamba pretrain`` (stage 1, MAMIM) and ``ssmamba finetune`` (stage 2)."""

from __future__ import annotations

import click

from ssmamba.cli.options import build_config, config_options
from ssmamba.train.finetune import FinetuneConfig
from ssmamba.train.pretrain import PretrainConfig


def _run(func, cfg, resume: bool, progress: bool):
    from ssmamba.cli.console import console_logging
    from ssmamba.train.engine import NonFiniteLossError

    console_logging(progress)
    try:
        return func(cfg, resume=resume, progress=progress)
    except NonFiniteLossError as error:
        raise click.ClickException(str(error)) from error
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error


@click.command()
@config_options(PretrainConfig)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def pretrain(resume: bool, progress: bool, **values) -> None:
    """MAMIM self-supervised pretraining on your own images (labels ignored)."""
    from ssmamba.train.pretrain import pretrain as run

    checkpoint = _run(run, build_config(PretrainConfig, values), resume, progress)
    click.echo(f"encoder checkpoint: {checkpoint}")


@click.command()
@config_options(FinetuneConfig)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def finetune(resume: bool, progress: bool, **values) -> None:
    """Supervised fine-tuning from a MAMIM checkpoint (--checkpoint) or from scratch."""
    from ssmamba.train.finetune import finetune as run

    best = _run(run, build_config(FinetuneConfig, values), resume, progress)
    click.echo(f"best checkpoint: {best}")
