"""``ssmamba evaluate``, ``ssmamba predict`` and ``ssmamba probe``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from ssmamba.cli.options import device_option, progress_option, threads_option

_DATA_HELP = "Image folder, CSV manifest or nucleus-points CSV."
_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace what --out already holds (refused otherwise).")
_ALLOW_LEAKAGE = click.option("--allow-leakage", is_flag=True,
                              help="Accept the same image in more than one split (an error otherwise).")


def _echo_skipped(dataset, path: Path | None) -> None:
    """Name on the console how many files ``dataset`` left out, and where they are listed."""
    if path is not None:
        click.echo(f"skipped {len(dataset.skipped)} unreadable file(s), e.g. {dataset.skipped[0][0]}; "
                   f"full list in {path}", err=True)


def _loader(dataset, batch_size: int, workers: int):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A fine-tuned checkpoint directory (e.g. runs/finetune/best).")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path), help=_DATA_HELP)
@click.option("--split", default="test", show_default=True, help="Which split to evaluate.")
@click.option("--out", default="runs/evaluate", show_default=True, type=click.Path(path_type=Path))
@click.option("--group-column", default=None, help="Group column used to split data without a split column.")
@click.option("--ordinal", is_flag=True, help="Labels are ordered grades: report quadratic-weighted kappa.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for 95% CIs (0 = none).")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--num-workers", default=0, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the split (if made) and the bootstrap.")
@click.option("--tta/--no-tta", default=False, show_default=True,
              help="Average over the 8 rotations/flips of each image (8x slower inference).")
@device_option()
@threads_option()
@progress_option()
@_OVERWRITE
@_ALLOW_LEAKAGE
def evaluate(checkpoint, data, split, out, group_column, ordinal, bootstrap, batch_size, num_workers, seed, tta,
             device, threads, progress, overwrite, allow_leakage):
    """Metrics with bootstrap 95% CIs, confusion matrix and ROC curves for one split."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.workflows.evaluate import evaluate_checkpoint

    claim_run_dir(out, overwrite=overwrite)
    result = evaluate_checkpoint(checkpoint, data, out, split=split, group_column=group_column, ordinal=ordinal,
                                 n_bootstrap=bootstrap, batch_size=batch_size, num_workers=num_workers, seed=seed,
                                 tta=tta, device=device, progress=progress, allow_leakage=allow_leakage)
    _echo_skipped(result.dataset, result.skipped_list)
    click.echo(result.report.read_text())


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@click.option("--out", default="predictions.csv", show_default=True, type=click.Path(path_type=Path))
@click.option("--batch-size", default=128, show_default=True)
@click.option("--num-workers", default=0, show_default=True)
@click.option("--tta/--no-tta", default=False, show_default=True,
              help="Average over the 8 rotations/flips of each image (8x slower inference).")
@device_option()
@threads_option()
@progress_option()
@_OVERWRITE
def predict(checkpoint, inputs, out, batch_size, num_workers, tta, device, threads, progress, overwrite):
    """Class probabilities for a folder, a CSV or a single image, written to a CSV (unreadable files are
    skipped and listed in OUT.skipped.csv)."""
    from ssmamba.data import load_unlabelled
    from ssmamba.data.imageio import IMAGE_ERRORS, read_rgb
    from ssmamba.eval.inference import class_probabilities, predict_proba
    from ssmamba.io.atomic import atomic_write_text
    from ssmamba.io.runs import check_writable, write_skipped
    from ssmamba.workflows.evaluate import load_classifier

    if out.exists() and not overwrite:
        raise click.ClickException(f"--out {out} already exists; pass --overwrite to replace it or choose another")
    if out.is_dir():
        raise click.ClickException(f"--out {out} is a folder; give the path of a CSV file")
    check_writable(out.parent, "--out folder")
    classifier = load_classifier(checkpoint, device)
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
    click.echo(f"wrote {len(names)} predictions to {out}")


@click.command()
@click.option("--encoder", required=True,
              help="ssmamba name, ssmamba/timm checkpoint directory, or timm model name.")
@click.option("--checkpoint", default=None, help="Weights for a named encoder.")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path), help=_DATA_HELP)
@click.option("--img-size", default=None, type=int, help="Resize inputs to this side (default: the encoder's).")
@click.option("--crop-size", default=32, show_default=True, help="Nucleus-points CSVs: crop side.")
@click.option("--group-column", default=None)
@click.option("--k", default=20, show_default=True, help="Neighbours for kNN.")
@click.option("--out", default="runs/probe", show_default=True, type=click.Path(path_type=Path))
@click.option("--batch-size", default=128, show_default=True)
@click.option("--seed", default=0, show_default=True)
@device_option()
@threads_option()
@progress_option()
@_OVERWRITE
@_ALLOW_LEAKAGE
def probe(encoder, checkpoint, data, img_size, crop_size, group_column, k, out, batch_size, seed, device,
          threads, progress, overwrite, allow_leakage):
    """Linear probe and kNN on frozen features (train -> val for model selection -> test)."""
    from ssmamba.io.runs import claim_run_dir
    from ssmamba.models.encoders import load_encoder
    from ssmamba.workflows.probe import probe_encoder

    claim_run_dir(out, overwrite=overwrite)
    results = probe_encoder(load_encoder(encoder, checkpoint=checkpoint), data, out, img_size=img_size,
                            crop_size=crop_size, group_column=group_column, k=k, batch_size=batch_size, seed=seed,
                            device=device, progress=progress, allow_leakage=allow_leakage)
    for name, row in results.items():
        click.echo(f"{name:>6}: " + ", ".join(f"{m} {v:.4f}" for m, v in row.items() if m != "C"))
