"""``ssmamba evaluate``, ``ssmamba predict`` and ``ssmamba probe``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from ssmamba.cli.options import ConfigCommand, device, progress_option, save_config
from ssmamba.workflows.config import EvaluateConfig, PredictConfig, ProbeConfig  # no torch: `--help` stays fast

_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")


def _echo_skipped(dataset, path: Path | None) -> None:
    """Name on the console how many files ``dataset`` left out, and where they are listed."""
    if path is not None:
        click.echo(f"skipped {len(dataset.skipped)} unreadable file(s), e.g. {dataset.skipped[0][0]}; "
                   f"full list in {path}", err=True)


def _loader(dataset, batch_size: int, workers: int):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)


@click.command(cls=ConfigCommand, config=EvaluateConfig)
@progress_option()
@_OVERWRITE
def evaluate(cfg: EvaluateConfig, progress: bool, overwrite: bool):
    """Metrics with bootstrap 95% CIs, confusion matrix and ROC curves for one split."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.workflows.evaluate import evaluate_checkpoint

    out = claim_run_dir(cfg.out, overwrite=overwrite)
    result = evaluate_checkpoint(cfg.checkpoint, cfg.data, out, split=cfg.split, group_column=cfg.group_column,
                                 ordinal=cfg.ordinal, n_bootstrap=cfg.bootstrap, batch_size=cfg.batch_size,
                                 num_workers=cfg.num_workers, seed=cfg.seed, tta=cfg.tta, device=device(cfg.device),
                                 progress=progress, allow_leakage=cfg.allow_leakage)
    save_config(cfg, out / "config.yaml")
    _echo_skipped(result.dataset, result.skipped_list)
    click.echo(result.report.read_text())


@click.command(cls=ConfigCommand, config=PredictConfig)
@progress_option()
@_OVERWRITE
def predict(cfg: PredictConfig, progress: bool, overwrite: bool):
    """Class probabilities for a folder, a CSV or a single image, written to a CSV (unreadable files are
    skipped and listed in OUT.skipped.csv)."""
    from ssmamba.data import load_unlabelled
    from ssmamba.data.imageio import IMAGE_ERRORS, read_rgb
    from ssmamba.eval.inference import class_probabilities, predict_proba
    from ssmamba.io.atomic import atomic_write_text
    from ssmamba.io.runs import check_writable, write_skipped
    from ssmamba.workflows.classifier import load_classifier

    out, inputs, batch_size, num_workers, tta = Path(cfg.out), Path(cfg.inputs), cfg.batch_size, cfg.num_workers, cfg.tta
    if out.exists() and not overwrite:
        raise click.ClickException(f"--out {out} already exists; pass --overwrite to replace it or choose another")
    if out.is_dir():
        raise click.ClickException(f"--out {out} is a folder; give the path of a CSV file")
    check_writable(out.parent, "--out folder")
    classifier = load_classifier(cfg.checkpoint, device(cfg.device))
    model, transform = classifier.model, classifier.transform
    classes = classifier.class_names or [str(i) for i in range(model.num_classes)]
    if inputs.is_file() and inputs.suffix.lower() != ".csv":
        names = [str(inputs)]
        try:
            image = read_rgb(inputs)
        except IMAGE_ERRORS as error:
            raise click.ClickException(f"cannot read image {inputs}: {error}") from error
        probs = class_probabilities(model, transform(image)[None], tta).numpy()
    else:
        # every file is decoded first (unreadable ones are skipped and listed), and one that breaks later is an
        # error: a prediction is written next to the name of the image it was computed from, never a neighbour's
        dataset = load_unlabelled(inputs, crop_size=classifier.crop_size, transform=transform, verify=True,
                                  replace_unreadable=False)
        names = [str(record.image) for record in dataset.records]
        probs, _ = predict_proba(model, _loader(dataset, batch_size, num_workers), tta=tta, progress=progress)
        _echo_skipped(dataset, write_skipped(out.with_name(out.stem + ".skipped.csv"), dataset.skipped))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "prediction", *[f"prob_{c}" for c in classes]])
    for name, row in zip(names, probs):
        writer.writerow([name, classes[int(row.argmax())], *[f"{p:.6f}" for p in row]])
    atomic_write_text(out, buffer.getvalue())
    save_config(cfg, out.with_suffix(".yaml"))
    click.echo(f"wrote {len(names)} predictions to {out}")


@click.command(cls=ConfigCommand, config=ProbeConfig, renamed={"--checkpoint": "--weights"})
@progress_option()
@_OVERWRITE
def probe(cfg: ProbeConfig, progress: bool, overwrite: bool):
    """Linear probe and kNN on frozen features (train -> val for model selection -> test)."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.models.encoders import load_encoder
    from ssmamba.workflows.probe import probe_encoder

    out = claim_run_dir(cfg.out, overwrite=overwrite)
    results = probe_encoder(load_encoder(cfg.encoder, checkpoint=cfg.weights), cfg.data, out, img_size=cfg.img_size,
                            crop_size=cfg.crop_size, group_column=cfg.group_column, k=cfg.k, batch_size=cfg.batch_size,
                            seed=cfg.seed, device=device(cfg.device), progress=progress, allow_leakage=cfg.allow_leakage)
    save_config(cfg, out / "config.yaml")
    for name, row in results.items():
        click.echo(f"{name:>6}: " + ", ".join(f"{m} {v:.4f}" for m, v in row.items() if m != "C"))
