"""Training and inference of one MIL head on bags of features (saving and loading: ``mil.checkpoint``).

One bag per optimisation step (bags differ in size), AdamW with a cosine schedule, cross-entropy with optional
inverse-frequency class weights, random subsampling of large bags during training, and full-bag streaming
inference (``predict_bag``) for evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ssmamba.mil.base import MILHead, drop_instances, subsample_bag
from ssmamba.mil.bags import BagDataset
from ssmamba.train.optim import class_weights, warmup_cosine


@dataclass
class MILTrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training bags.
        lr, weight_decay: AdamW settings; the learning rate follows a cosine decay to 0 after a 1-epoch warm-up.
        max_instances: training bags larger than this are randomly subsampled at every step (None: never).
        instance_dropout: share of a training bag's instances dropped at random at every step, an augmentation
            that keeps sequence heads from memorising fixed tile neighbourhoods (may drop the one decisive tile
            of a bag, so keep it low when a single tile decides).
        balance_classes: weight the loss by inverse class frequency of the training bags.
        standardise_features: standardise inputs with the mean/std of the training instances (stored in the head).
        select_on_validation: with a validation set, keep the weights of the epoch with the lowest validation
            loss (otherwise the last epoch's).
        chunk_size: instances per chunk in streaming inference.
        seed: controls initialisation, bag order and subsampling.
        device: torch device.
        threads: torch CPU threads for training and scoring; None leaves torch's setting.
    """

    epochs: int = 40
    lr: float = 2e-4
    weight_decay: float = 1e-4
    max_instances: int | None = 8192
    instance_dropout: float = 0.0
    balance_classes: bool = True
    standardise_features: bool = True
    select_on_validation: bool = True
    chunk_size: int = 4096
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with ``count`` torch CPU threads (None: unchanged), then restore the previous count."""
    if count is not None and count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _optimizer(head: MILHead, config: MILTrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused kernel on CPU and CUDA updates all parameters in one call instead of a dozen small ops
    per tensor, which is a tenth of a small bag's training step otherwise."""
    return torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


@dataclass
class BagPredictions:
    """Predictions on a set of bags: ids, true labels (n,), class probabilities (n, C), per-tile attention."""

    slide_ids: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    attention: list[np.ndarray] = field(repr=False)

    def write_csv(self, path: str | Path, class_names: list[str]) -> None:
        """``slide_id,label,prediction,prob_<class>...`` with class names, one row per bag."""
        lines = ["slide_id,label,prediction," + ",".join(f"prob_{name}" for name in class_names)]
        for slide_id, label, probs in zip(self.slide_ids, self.y_true, self.probs):
            lines.append(f"{slide_id},{class_names[int(label)]},{class_names[int(np.argmax(probs))]},"
                         + ",".join(f"{p:.6f}" for p in probs))
        Path(path).write_text("\n".join(lines) + "\n")


def train_head(head: MILHead, train_set: BagDataset, config: MILTrainConfig, val_set: BagDataset | None = None,
               progress: bool = True) -> list[dict]:
    """Fit ``head`` on ``train_set``; returns one dict per epoch (train loss, and validation loss when given)."""
    with torch_threads(config.threads):
        return _train(head, train_set, config, val_set, progress)


def _train(head: MILHead, train_set: BagDataset, config: MILTrainConfig, val_set: BagDataset | None,
           progress: bool) -> list[dict]:
    device = torch.device(config.device)
    if config.standardise_features:
        head.set_feature_statistics(*feature_statistics(train_set))
    head.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(head, config, device)
    total_steps = config.epochs * len(train_set)
    scheduler = warmup_cosine(optimizer, len(train_set), total_steps, min_lr_ratio=0.0)
    labels = [record.label for record in train_set.records]
    targets = torch.tensor(labels, device=device).view(-1, 1)  # one (1,) target per bag, made once
    weights = class_weights(np.asarray(labels), head.num_classes).to(device) if config.balance_classes else None
    history, best_loss, best_state = [], math.inf, None
    for epoch in tqdm(range(config.epochs), desc="epochs", disable=not progress, leave=False):
        head.train()
        losses = []
        for index in torch.randperm(len(train_set), generator=generator).tolist():
            features, coords, _ = train_set[index]
            features, coords = subsample_bag(features, coords, config.max_instances, generator)
            if config.instance_dropout > 0:
                features, coords = drop_instances(features, coords, config.instance_dropout, generator)
            logits = head(features.to(device), coords.to(device))
            loss = F.cross_entropy(logits, targets[index], weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if val_set is not None:
            predictions = predict(head, val_set, chunk_size=config.chunk_size, device=config.device)
            probs = torch.from_numpy(predictions.probs).clamp_min(1e-12)
            record["val_loss"] = float(F.nll_loss(probs.log(), torch.from_numpy(predictions.y_true)).item())
            if config.select_on_validation and record["val_loss"] < best_loss:
                best_loss, best_state = record["val_loss"], copy.deepcopy(head.state_dict())
                record["selected"] = True
        history.append(record)
    if best_state is not None:
        head.load_state_dict(best_state)
    return history


@torch.no_grad()
def feature_statistics(dataset: BagDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation over every instance of every bag (float64 running sums)."""
    total, total_sq, count = 0.0, 0.0, 0
    for index in range(len(dataset)):
        features = dataset[index][0].double()
        total = total + features.sum(0)
        total_sq = total_sq + (features * features).sum(0)
        count += len(features)
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return mean.float(), std.float()


@torch.no_grad()
def predict(head: MILHead, dataset: BagDataset, chunk_size: int = 4096, device: str = "cpu",
            threads: int | None = None) -> BagPredictions:
    """Class probabilities and attention for every bag, each bag whole (streamed ``chunk_size`` tiles at a time).

    ``threads``: torch CPU threads (None: torch's setting).
    """
    with torch_threads(threads):
        return _predict(head, dataset, chunk_size, device)


def _predict(head: MILHead, dataset: BagDataset, chunk_size: int, device: str) -> BagPredictions:
    head.to(device).eval()
    probs, labels, attention = [], [], []
    for index in range(len(dataset)):
        features, coords, label = dataset[index]
        out = head.predict_bag(features, coords, chunk_size=chunk_size)
        probs.append(torch.softmax(out.logits.float(), dim=-1)[0].cpu().numpy())
        attention.append(out.attention[0].float().cpu().numpy())
        labels.append(label)
    return BagPredictions([r.slide_id for r in dataset.records], np.asarray(labels, dtype=np.int64),
                          np.stack(probs), attention)


def train_config_dict(config: MILTrainConfig) -> dict:
    return asdict(config)
