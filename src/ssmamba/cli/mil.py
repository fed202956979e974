"""``ssmamba mil``: train and evaluate multiple-instance heads on bags of tile features.

    ssmamba mil train --csv bags.csv --features OUT/features_0.50mpp_224px/<encoder> --head abmil --folds 5 \
        --out runs/mil
    ssmamba mil evaluate --heads runs/mil --csv test.csv --features ... --out runs/mil-test

The options are the fields of :mod:`ssmamba.mil.config`; ``--heads`` (was ``--model``) is a trained head folder,
since ``--model`` names an architecture everywhere else.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ssmamba.cli.options import ConfigCommand, device, progress_option, save_config
from ssmamba.mil.config import MILEvaluateRunConfig, MILTrainRunConfig

# spellings of before the one vocabulary (see ssmamba.cli.options), accepted with a warning for one release
_BAGS_RENAMED = {"--patient-column": "--group-column"}


@click.group()
def mil() -> None:
    """Multiple-instance learning on slide (or image) bags of tile features."""


@mil.command(cls=ConfigCommand, config=MILTrainRunConfig,
             renamed={**_BAGS_RENAMED, "--head-arg": "--head-args", "--no-balance": ("--balance", "none")})
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out (the same options): finished "
              "folds are kept, the interrupted one continues from its last epoch.")
@click.option("--reshard", is_flag=True, help="With --resume: continue a run begun with another number of "
              "processes (torchrun) or --accum-steps; without it such a resume is refused.")
@click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")
@progress_option()
def train(cfg: MILTrainRunConfig, resume: bool, reshard: bool, overwrite: bool, progress: bool) -> None:
    """Train a MIL head with k-fold cross-validation (or on a fixed split) and report slide-level metrics.
    Data-parallel when started by torchrun (rank 0 writes the run folder and prints)."""
    from ssmamba.cli.console import console_logging
    from ssmamba.io.distributed import launch_rank
    from ssmamba.train.setup import training_run
    from ssmamba.workflows.mil_cv import ExperimentSettings, run_cross_validation, run_fixed_split

    if reshard and not resume:
        raise click.UsageError("--reshard only applies to --resume")
    main = launch_rank() == 0
    console_logging(progress or not main)  # warnings on the console (and the step log with --no-progress)
    # claim --out (rank 0) and join the torchrun job, if any, until the command ends
    out_dir, run_device = click.get_current_context().with_resource(
        training_run(cfg.out, cfg.device, resume, overwrite))
    progress = progress and main
    try:
        table = cfg.bags.read()
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    if main:
        click.echo(table.describe())
    settings = ExperimentSettings(head_name=cfg.head, head_kwargs=cfg.head_args,
                                  train=replace(cfg.train_config(), device=str(run_device)),
                                  val_fraction=cfg.val_fraction, n_bootstrap=cfg.bootstrap, progress=progress)
    extra = {"features_dir": str(Path(cfg.bags.features).resolve()), "csv": str(Path(cfg.bags.csv).resolve())}
    use_folds = cfg.folds is not None or all(r.fold is not None for r in table.records)
    try:
        if use_folds:
            run_cross_validation(table, settings, out_dir, n_folds=cfg.folds, seed=cfg.seed, extra=extra,
                                 resume=resume, reshard=reshard)
            if main:
                click.echo((out_dir / "summary.md").read_text())
        else:
            metrics = run_fixed_split(table, settings, out_dir, seed=cfg.seed, extra=extra, resume=resume,
                                      reshard=reshard)
            if main:
                click.echo(f"test metrics written to {out_dir}; " + ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    if main:
        save_config(cfg, out_dir / "config.yaml")


@mil.command(cls=ConfigCommand, config=MILEvaluateRunConfig, renamed={**_BAGS_RENAMED, "--model": "--heads"})
@click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")
@progress_option()
def evaluate(cfg: MILEvaluateRunConfig, overwrite: bool, progress: bool) -> None:
    """Score bags with trained head(s) and write predictions.csv, metrics and a report."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.workflows.mil_cv import evaluate_saved_heads

    out_dir = claim_run_dir(cfg.out, overwrite=overwrite)
    bags = cfg.bags
    try:
        result = evaluate_saved_heads(cfg.heads, bags.csv, bags.features, out_dir, id_column=bags.id_column,
                                      label_column=bags.label_column, patient_column=bags.group_column,
                                      allow_missing=bags.allow_missing, n_bootstrap=cfg.bootstrap,
                                      chunk_size=cfg.chunk_size, device=device(cfg.device), threads=cfg.threads,
                                      progress=progress)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    save_config(cfg, out_dir / "config.yaml")
    click.echo(f"{len(result.predictions.slide_ids)} bags, {result.n_heads} head(s); predictions and report in "
               f"{out_dir}")
