"""ROI probing of a frozen encoder: embed train/val/test once, then a linear probe (``C`` chosen on val) and a kNN
classifier on the test embeddings, each with a full report, and ``probe.json`` with the headline metrics.

Any encoder :func:`ssmamba.models.load_encoder` resolves (an ssmamba or timm name or checkpoint) is probed by the
same code on the same splits. Used by ``ssmamba probe``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ssmamba.data import load_dataset
from ssmamba.data.transforms import eval_transform
from ssmamba.eval.inference import embed
from ssmamba.eval.metrics import compute_metrics
from ssmamba.eval.probe import knn_probe, linear_probe
from ssmamba.eval.report import write_report
from ssmamba.io.runs import write_skipped
from ssmamba.models.encoders import Encoder
from ssmamba.workflows.config import ProbeConfig

__all__ = ["HEADLINE_METRICS", "ProbeConfig", "probe_encoder"]

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "weighted_f1", "macro_f1")


def probe_encoder(encoder: Encoder, data: str | Path, out: str | Path, *, img_size: int | None = None,
                  crop_size: int = 32, group_column: str | None = None, k: int = 20, batch_size: int = 128,
                  seed: int = 0, n_bootstrap: int = 1000, device: str | torch.device = "cpu", progress: bool = True,
                  allow_leakage: bool = False) -> dict:
    """Probe ``encoder`` on ``data`` into ``out`` (which the caller claimed); returns ``{"linear": {...},
    "knn": {...}}`` with :data:`HEADLINE_METRICS` (and the chosen ``C`` for the linear probe).

    ``img_size`` resizes inputs (default: the encoder's input size, else 224).
    """
    out = Path(out)
    encoder.model.to(device)
    transform = eval_transform(img_size or encoder.input_size or 224, encoder.mean, encoder.std)
    options = dict(crop_size=crop_size, group_column=group_column, seed=seed, allow_leakage=allow_leakage)
    splits, classes = {}, None
    for split in ("train", "val", "test"):
        dataset = load_dataset(data, split, transform, classes=classes, **options)
        write_skipped(out / f"skipped_{split}.csv", dataset.skipped)
        classes = dataset.classes
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
        splits[split] = embed(encoder.model, loader, progress=progress)
    (tx, ty), (vx, vy), (sx, sy) = splits["train"], splits["val"], splits["test"]
    results = {}
    linear, cost = linear_probe(tx, ty, vx, vy, sx, len(classes), seed=seed)
    for name, probs in (("linear", linear), ("knn", knn_probe(tx, ty, sx, len(classes), k))):
        metrics = compute_metrics(sy, probs, classes, n_bootstrap=n_bootstrap, seed=seed)
        write_report(metrics, out / name, probs=probs, y_true=sy, title=f"{name} probe: {encoder.name} on {data}")
        results[name] = {m: metrics[m] for m in HEADLINE_METRICS}
    results["linear"]["C"] = cost
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"encoder": encoder.name, "data": str(data), **results}, indent=2))
    return results
