"""``ssmamba pretrain`` (stage 1, MAMIM) and ``ssmamba finetune`` (stage 2)."""

from __future__ import annotations

import click

from ssmamba.cli.options import ConfigCommand
from ssmamba.train.config import FinetuneConfig, PretrainConfig  # no torch: `--help` stays fast


def _rank0() -> bool:
    """Whether this is the main process (rank 0 under torchrun); imports torch, so only once a command runs."""
    from ssmamba.io.distributed import launch_rank

    return launch_rank() == 0


def _run(func, cfg, resume: bool, overwrite: bool, progress: bool, reshard: bool):
    """Run ``func``; user errors (a bad file, option or folder) become one ``Error:`` line in ``ssmamba.cli``.
    Under torchrun, processes other than rank 0 show warnings and errors only."""
    from ssmamba.cli.console import console_logging

    if not cfg.data:  # never fall back to reading the current directory
        raise click.UsageError("--data is required: an image folder, CSV manifest or nucleus-points CSV")
    if reshard and not resume:
        raise click.UsageError("--reshard only applies to --resume")
    main = _rank0()
    console_logging(progress or not main)
    return func(cfg, resume=resume, progress=progress and main, overwrite=overwrite, reshard=reshard)


_RESUME = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
_RESHARD = click.option("--reshard", is_flag=True,
                        help="With --resume: continue a run saved with another number of processes (torchrun) or "
                             "images per step; without it such a resume is refused.")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Delete what --out holds (another run) and start afresh; without it such a folder "
                               "is refused.")


@click.command(cls=ConfigCommand, config=PretrainConfig)
@_RESUME
@_RESHARD
@_OVERWRITE
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def pretrain(cfg: PretrainConfig, resume: bool, reshard: bool, overwrite: bool, progress: bool) -> None:
    """MAMIM self-supervised pretraining on your own images (labels ignored)."""
    from ssmamba.train.pretrain import pretrain as run

    checkpoint = _run(run, cfg, resume, overwrite, progress, reshard)
    if _rank0():
        click.echo(f"encoder checkpoint: {checkpoint}")


# --init is the weights a run starts from; --checkpoint names the trained model under test (evaluate, predict)
@click.command(cls=ConfigCommand, config=FinetuneConfig, renamed={"--checkpoint": "--init"})
@_RESUME
@_RESHARD
@_OVERWRITE
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def finetune(cfg: FinetuneConfig, resume: bool, reshard: bool, overwrite: bool, progress: bool) -> None:
    """Supervised fine-tuning from a MAMIM checkpoint (--init) or from scratch."""
    from ssmamba.train.finetune import finetune as run

    best = _run(run, cfg, resume, overwrite, progress, reshard)
    if _rank0():
        click.echo(f"best checkpoint: {best}")
