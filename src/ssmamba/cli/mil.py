"""``ssmamba mil``: train and evaluate multiple-instance heads on bags of tile features.

    ssmamba mil train --csv bags.csv --features OUT/features_0.50mpp_224px/<encoder> --head abmil --folds 5 \
        --out runs/mil
    ssmamba mil evaluate --model runs/mil --csv test.csv --features ... --out runs/mil-test
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from ssmamba.cli.options import device_option, progress_option
from ssmamba.train.engine import Precision


def _head_kwargs(pairs: tuple[str, ...]) -> dict:
    """``--head-arg dim=256 --head-arg order=given`` -> {"dim": 256, "order": "given"} (values parsed as YAML)."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--head-arg")
        kwargs[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return kwargs


def _registered_head(ctx, param, name: str) -> str:
    """``--head`` must name a head in :data:`ssmamba.mil.MIL_HEADS` (looked up only when the command runs)."""
    from ssmamba.mil import MIL_HEADS

    if name not in MIL_HEADS:
        raise click.BadParameter(f"{name!r} is not a MIL head; choose one of {', '.join(sorted(MIL_HEADS))}")
    return name


def _bag_options(function):
    for option in reversed([
        click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Bags CSV: slide_id,label[,split|fold][,patient_id]."),
        click.option("--features", "features_dir", required=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Folder of <slide>.h5 feature files (from `wsi extract`)."),
        click.option("--id-column", default="slide_id", show_default=True),
        click.option("--label-column", default="label", show_default=True),
        click.option("--patient-column", help="Group slides by this column [default: patient_id/case_id if present]."),
        click.option("--allow-missing", is_flag=True, help="Leave out bags without a feature file."),
        click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True,
                     help="Bootstrap resamples for confidence intervals."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="torch CPU threads [default: torch's, i.e. OMP_NUM_THREADS or the number of cores]."),
        device_option(),
    ]):
        function = option(function)
    return function


@click.group()
def mil() -> None:
    """Multiple-instance learning on slide (or image) bags of tile features."""


@mil.command()
@_bag_options
@click.option("--head", "head_name", default="abmil", show_default=True, callback=_registered_head,
              help="A registered MIL head: abmil, transmil and mamba_mil are built in.")
@click.option("--head-arg", "head_args", multiple=True, help="Constructor argument KEY=VALUE (repeatable).")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--folds", type=int, help="K-fold CV over all bags (stratified, by patient if known). Without it: "
              "the CSV's fold column, else its split column (train/val/test).")
@click.option("--epochs", default=40, show_default=True)
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--max-instances", default=8192, show_default=True, help="Subsample bigger training bags (0: never).")
@click.option("--val-fraction", default=0.0, show_default=True,
              help="In CV, hold out this share of each fold's training bags to pick the best epoch.")
@click.option("--balance/--no-balance", default=True, show_default=True, help="Inverse-frequency class weights.")
@click.option("--chunk-size", default=4096, show_default=True, help="Tiles per chunk at inference.")
@click.option("--precision", type=click.Choice([p.value for p in Precision]), default=Precision.FP32.value,
              show_default=True, help="bf16: bfloat16 autocast in the training forward pass.")
@click.option("--accum-steps", default=1, show_default=True, type=click.IntRange(min=1),
              help="Bags per optimiser step (per process under torchrun: N processes x this bags per step).")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out (the same options): finished "
              "folds are kept, the interrupted one continues from its last epoch.")
@click.option("--reshard", is_flag=True, help="With --resume: continue a run begun with another number of "
              "processes (torchrun) or --accum-steps; without it such a resume is refused.")
@click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")
@progress_option()
def train(csv_path, features_dir, id_column, label_column, patient_column, allow_missing, n_bootstrap, threads,
          device, head_name, head_args, out_dir, folds, epochs, lr, weight_decay, max_instances, val_fraction, balance,
          chunk_size, precision, accum_steps, seed, resume, reshard, overwrite, progress) -> None:
    """Train a MIL head with k-fold cross-validation (or on a fixed split) and report slide-level metrics.
    Data-parallel when started by torchrun (rank 0 writes the run folder and prints)."""
    from ssmamba.cli.console import console_logging
    from ssmamba.io.distributed import launch_rank
    from ssmamba.mil.bags import read_bag_table
    from ssmamba.mil.training import MILTrainConfig
    from ssmamba.train.setup import training_run
    from ssmamba.workflows.mil_cv import ExperimentSettings, run_cross_validation, run_fixed_split

    if reshard and not resume:
        raise click.UsageError("--reshard only applies to --resume")
    main = launch_rank() == 0
    console_logging(progress or not main)  # warnings on the console (and the step log with --no-progress)
    # claim --out (rank 0) and join the torchrun job, if any, until the command ends
    out_dir, device = click.get_current_context().with_resource(training_run(out_dir, device, resume, overwrite))
    device, progress = str(device), progress and main

    try:
        table = read_bag_table(csv_path, features_dir, id_column=id_column, label_column=label_column,
                               patient_column=patient_column, allow_missing=allow_missing)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    if main:
        click.echo(table.describe())
    settings = ExperimentSettings(
        head_name=head_name, head_kwargs=_head_kwargs(head_args),
        train=MILTrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, max_instances=max_instances or None,
                             balance_classes=balance, chunk_size=chunk_size, precision=precision,
                             accum_steps=accum_steps, seed=seed, device=device, threads=threads),
        val_fraction=val_fraction, n_bootstrap=n_bootstrap, progress=progress)
    extra = {"features_dir": str(features_dir.resolve()), "csv": str(csv_path.resolve())}
    use_folds = folds is not None or all(r.fold is not None for r in table.records)
    try:
        if use_folds:
            summary = run_cross_validation(table, settings, out_dir, n_folds=folds, seed=seed, extra=extra,
                                           resume=resume, reshard=reshard)
            if main:
                click.echo((out_dir / "summary.md").read_text())
        else:
            metrics = run_fixed_split(table, settings, out_dir, seed=seed, extra=extra, resume=resume,
                                      reshard=reshard)
            if main:
                click.echo(f"test metrics written to {out_dir}; " + ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    except ValueError as error:
        raise click.UsageError(str(error)) from error


@mil.command()
@_bag_options
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A trained head folder, or a CV run folder (its fold_* heads are averaged).")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--chunk-size", default=4096, show_default=True, help="Tiles per chunk at inference.")
@click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")
@progress_option()
def evaluate(csv_path, features_dir, id_column, label_column, patient_column, allow_missing, n_bootstrap, threads,
             device, model_dir, out_dir, chunk_size, overwrite, progress) -> None:
    """Score bags with trained head(s) and write predictions.csv, metrics and a report."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.workflows.mil_cv import evaluate_saved_heads

    claim_run_dir(out_dir, overwrite=overwrite)
    try:
        result = evaluate_saved_heads(model_dir, csv_path, features_dir, out_dir, id_column=id_column,
                                      label_column=label_column, patient_column=patient_column,
                                      allow_missing=allow_missing, n_bootstrap=n_bootstrap, chunk_size=chunk_size,
                                      device=device, threads=threads, progress=progress)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    click.echo(f"{len(result.predictions.slide_ids)} bags, {result.n_heads} head(s); predictions and report in "
               f"{out_dir}")
