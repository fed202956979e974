"""``ssmamba evaluate``, ``ssmamba predict`` and ``ssmamba probe``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from ssmamba.cli.options import device_option

_DATA_HELP = "Image folder, CSV manifest or nucleus-points CSV."


def _checkpoint_transform(checkpoint: Path, device: str = "cpu"):
    """The model (on ``device``) and eval transform a checkpoint was trained with (size, mean, std from its
    config.json)."""
    from ssmamba import create_model
    from ssmamba.data.transforms import eval_transform

    model = create_model(checkpoint=checkpoint).eval().to(device)
    cfg = model.pretrained_cfg
    return model, eval_transform(cfg["input_size"][-1], cfg["mean"], cfg["std"]), cfg


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
def evaluate(checkpoint, data, split, out, group_column, ordinal, bootstrap, batch_size, num_workers, seed, tta,
             device):
    """Metrics with bootstrap 95% CIs, confusion matrix and ROC curves for one split."""
    from ssmamba.data import load_dataset
    from ssmamba.eval.inference import predict_proba
    from ssmamba.eval.metrics import compute_metrics
    from ssmamba.eval.report import write_report

    model, transform, cfg = _checkpoint_transform(checkpoint, device)
    classes = cfg.get("class_names")
    if not classes:
        raise click.ClickException(f"{checkpoint}/config.json has no class_names: is it a fine-tuned checkpoint?")
    dataset = load_dataset(data, split, transform, classes=classes, crop_size=cfg.get("crop_size") or 32,
                           group_column=group_column, seed=seed)
    probs, labels = predict_proba(model, _loader(dataset, batch_size, num_workers), tta=tta)
    metrics = compute_metrics(labels, probs, classes, ordinal=ordinal, n_bootstrap=bootstrap, seed=seed)
    write_report(metrics, out, probs=probs, y_true=labels,
                 title=f"{checkpoint} on {data} ({split}, n={len(dataset)}{', 8-view TTA' if tta else ''})")
    click.echo((Path(out) / "report.md").read_text())


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", type=click.Path(exists=True, path_type=Path))
@click.option("--out", default="predictions.csv", show_default=True, type=click.Path(path_type=Path))
@click.option("--batch-size", default=128, show_default=True)
@click.option("--num-workers", default=0, show_default=True)
@click.option("--tta/--no-tta", default=False, show_default=True,
              help="Average over the 8 rotations/flips of each image (8x slower inference).")
@device_option()
def predict(checkpoint, inputs, out, batch_size, num_workers, tta, device):
    """Class probabilities for a folder, a CSV or a single image, written to a CSV."""
    from ssmamba.data import load_unlabelled
    from ssmamba.data.imageio import read_rgb
    from ssmamba.eval.inference import class_probabilities, predict_proba

    model, transform, cfg = _checkpoint_transform(checkpoint, device)
    classes = cfg.get("class_names") or [str(i) for i in range(model.num_classes)]
    if inputs.is_file() and inputs.suffix.lower() != ".csv":
        names = [str(inputs)]
        probs = class_probabilities(model, transform(read_rgb(inputs))[None], tta).numpy()
    else:
        dataset = load_unlabelled(inputs, crop_size=cfg.get("crop_size") or 32, transform=transform)
        names = [str(record.image) for record in dataset.records]
        probs, _ = predict_proba(model, _loader(dataset, batch_size, num_workers), tta=tta)
        if dataset.skipped:
            click.echo(f"skipped {len(dataset.skipped)} unreadable file(s), e.g. {dataset.skipped[0]}", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prediction", *[f"prob_{c}" for c in classes]])
        for name, row in zip(names, probs):
            writer.writerow([name, classes[int(row.argmax())], *[f"{p:.6f}" for p in row]])
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
def probe(encoder, checkpoint, data, img_size, crop_size, group_column, k, out, batch_size, seed, device):
    """Linear probe and kNN on frozen features (train -> val for model selection -> test)."""
    from ssmamba.data import load_dataset
    from ssmamba.data.transforms import eval_transform
    from ssmamba.eval.inference import embed
    from ssmamba.eval.metrics import compute_metrics
    from ssmamba.eval.probe import knn_probe, linear_probe
    from ssmamba.eval.report import write_report
    from ssmamba.wsi.encoders import load_encoder

    enc = load_encoder(encoder, checkpoint=checkpoint)
    enc.model.to(device)
    size = img_size or enc.input_size or 224
    transform = eval_transform(size, enc.mean, enc.std)
    options = dict(crop_size=crop_size, group_column=group_column, seed=seed)
    splits = {}
    classes = None
    for split in ("train", "val", "test"):
        dataset = load_dataset(data, split, transform, classes=classes, **options)
        classes = dataset.classes
        splits[split] = embed(enc.model, _loader(dataset, batch_size, 0), progress=True)
    (tx, ty), (vx, vy), (sx, sy) = splits["train"], splits["val"], splits["test"]
    results = {}
    linear, cost = linear_probe(tx, ty, vx, vy, sx, len(classes), seed=seed)
    for name, probs in (("linear", linear), ("knn", knn_probe(tx, ty, sx, len(classes), k))):
        metrics = compute_metrics(sy, probs, classes, n_bootstrap=1000, seed=seed)
        write_report(metrics, Path(out) / name, probs=probs, y_true=sy, title=f"{name} probe: {enc.name} on {data}")
        results[name] = {m: metrics[m] for m in ("accuracy", "balanced_accuracy", "weighted_f1", "macro_f1")}
    results["linear"]["C"] = cost
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "probe.json").write_text(json.dumps({"encoder": enc.name, "data": str(data), **results}, indent=2))
    for name, row in results.items():
        click.echo(f"{name:>6}: " + ", ".join(f"{m} {v:.4f}" for m, v in row.items() if m != "C"))
