"""``ssmamba pretrain`` (stage 1, MAMIM) and ``ssmamba finetune`` (stage 2)."""

from __future__ import annotations

import click

from ssmamba.cli.options import build_config, config_options
from ssmamba.io.distributed import launch_rank
from ssmamba.train.finetune import FinetuneConfig
from ssmamba.train.pretrain import PretrainConfig


def _run(func, cfg, resume: bool, overwrite: bool, progress: bool, reshard: bool):
    """Run ``func``; user errors (a bad file, option or folder) become one ``Error:`` line in ``ssmamba.cli``.
    Under torchrun, processes other than rank 0 show warnings and errors only."""
    from ssmamba.cli.console import console_logging

    if not cfg.data:  # never fall back to reading the current directory
        raise click.UsageError("--data is required: an image folder, CSV manifest or nucleus-points CSV")
    if reshard and not resume:
        raise click.UsageError("--reshard only applies to --resume")
    main = launch_rank() == 0
    console_logging(progress or not main)
    return func(cfg, resume=resume, progress=progress and main, overwrite=overwrite, reshard=reshard)


_RESUME = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
_RESHARD = click.option("--reshard", is_flag=True,
                        help="With --resume: continue a run saved with another number of processes (torchrun) or "
                             "images per step; without it such a resume is refused.")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Delete what --out holds (another run) and start afresh; without it such a folder "
                               "is refused.")


@click.command()
@config_options(PretrainConfig)
@_RESUME
@_RESHARD
@_OVERWRITE
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def pretrain(resume: bool, reshard: bool, overwrite: bool, progress: bool, **values) -> None:
    """MAMIM self-supervised pretraining on your own images (labels ignored)."""
    from ssmamba.train.pretrain import pretrain as run

    checkpoint = _run(run, build_config(PretrainConfig, values), resume, overwrite, progress, reshard)
    if launch_rank() == 0:
        click.echo(f"encoder checkpoint: {checkpoint}")


@click.command()
@config_options(FinetuneConfig)
@_RESUME
@_RESHARD
@_OVERWRITE
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def finetune(resume: bool, reshard: bool, overwrite: bool, progress: bool, **values) -> None:
    """Supervised fine-tuning from a MAMIM checkpoint (--checkpoint) or from scratch."""
    from ssmamba.train.finetune import finetune as run

    best = _run(run, build_config(FinetuneConfig, values), resume, overwrite, progress, reshard)
    if launch_rank() == 0:
        click.echo(f"best checkpoint: {best}")
