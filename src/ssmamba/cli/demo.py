"""``ssmamba demo``: the whole two-stage pipeline on an embedded (synthetic) data set, or on ``--data PATH``."""

from __future__ import annotations

import click

from ssmamba.cli.options import ConfigCommand, save_config
from ssmamba.workflows.config import PipelineConfig  # no torch: `--help` stays fast


@click.command(cls=ConfigCommand, config=PipelineConfig)
@click.option("--overwrite", is_flag=True, help="Delete what --out holds (another run) and start afresh.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def demo(cfg: PipelineConfig, overwrite: bool, progress: bool) -> None:
    """MAMIM pretraining -> fine-tuning -> evaluation -> report, offline on CPU in a few minutes.

    Without --data the images are SYNTHETIC (generated H&E-like tissue), to show the pipeline end to end; give
    --data PATH (a labelled folder or CSV manifest) to run the same pipeline on real data.
    """
    from ssmamba.cli.console import console_logging
    from ssmamba.workflows.demo import run_pipeline

    console_logging(progress)
    if cfg.data is None:
        click.secho("ssmamba demo: generating a SYNTHETIC H&E-like data set (not real pathology); "
                    "use --data PATH for your own images.", fg="yellow")
    report = run_pipeline(cfg, progress=progress, overwrite=overwrite)
    save_config(cfg, report.parent / "config.yaml")
    click.echo(report.read_text())
    click.secho(f"report: {report}", fg="green")
