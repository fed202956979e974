"""Training of one MIL head on bags of features, on the engine every training run shares
(:class:`ssmamba.train.engine.Trainer`: exact resume, bf16, NaN stop, atomic training states).

What is MIL's own is small and named here: one bag per optimisation step (bags differ in size), the training view
of a bag (:class:`TrainingBags`: random subsampling of large bags and instance dropout), cross-entropy with optional
inverse-frequency class weights, and the choice of the epoch with the lowest validation loss
(:class:`MILTrainer`). AdamW groups and the warm-up + cosine schedule are ``ssmamba.train.optim``'s; inference is
:mod:`ssmamba.mil.inference`.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from ssmamba.io.distributed import gather_list, shard
from ssmamba.mil.bags import BagDataset
from ssmamba.mil.base import MILHead, drop_instances, subsample_bag
from ssmamba.mil.config import MILTrainConfig
from ssmamba.mil.inference import predict, torch_threads
from ssmamba.train.config import Precision
from ssmamba.train.engine import Trainer
from ssmamba.train.optim import adamw, class_weights, param_groups, warmup_cosine
from ssmamba.train.sampling import make_loader

__all__ = ["MILTrainConfig", "MILTrainer", "TrainingBags", "train_head", "feature_statistics", "head_optimizer",
           "train_config_dict"]


def train_config_dict(config: MILTrainConfig) -> dict:
    return {**asdict(config), "precision": config.precision.value}


class TrainingBags(Dataset):
    """The training view of bags: ``(features (n, D), coords (n, 2), label)`` with at most ``max_instances`` of a
    bag's instances, each further dropped with probability ``instance_dropout``.

    The random draws come from torch's global RNG, which :func:`~ssmamba.train.sampling.make_loader` seeds per
    ``(seed, epoch, bag)``: a resumed run draws the same instances as an uninterrupted one.
    """

    def __init__(self, bags: BagDataset, max_instances: int | None, instance_dropout: float = 0.0):
        self.bags, self.max_instances, self.instance_dropout = bags, max_instances, instance_dropout

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        features, coords, label = self.bags[index]
        features, coords = subsample_bag(features, coords, self.max_instances)
        if self.instance_dropout > 0:
            features, coords = drop_instances(features, coords, self.instance_dropout)
        return features, coords, label


class MILTrainer(Trainer):
    """One bag per micro-batch (a loader batch is one bag, ``(1, n, D)``: bags differ in size), ``accum_steps`` of
    them per process in each optimiser step; after each epoch the train loss and, given ``val_set``, the validation
    loss of the whole bags (scored by all processes together, each on its share, so it is the loss over the whole
    split on every process). With ``select_on_validation`` the weights of the epoch with the lowest validation loss
    are kept in the training state (``best_weights``), so a resumed run selects the same epoch."""

    unit, layout_options = "bags", "--accum-steps"

    def __init__(self, head: MILHead, config: MILTrainConfig, val_set: BagDataset | None,
                 loss_weights: torch.Tensor | None, **kwargs):
        super().__init__(head, **kwargs)
        self.config, self.val_set = config, val_set
        self.loss_weights = None if loss_weights is None else loss_weights.to(self.device)
        self.best_weights: dict[str, torch.Tensor] | None = None

    def compute_loss(self, batch) -> torch.Tensor:
        features, coords, label = batch
        loss = F.cross_entropy(self.train_model(features, coords), label, reduction="none")  # (bags,)
        if self.loss_weights is not None:
            # each bag times its class's weight (mean 1 over the training bags). cross_entropy's own weight= divides
            # by the batch's weight sum, which with one bag per step is that bag's weight: it would cancel out
            loss = loss * self.loss_weights[label]
        return loss.mean()

    def state_extras(self) -> dict:
        return {} if self.best_weights is None else {"best_weights": self.best_weights}

    def load_state_extras(self, extras: dict) -> None:
        self.best_weights = extras.get("best_weights")

    @property
    def epochs_trained(self) -> list[dict]:
        """One record per epoch: ``epoch``, ``train_loss`` and, with a validation set, ``val_loss`` (and
        ``selected`` on the epochs that became the best so far)."""
        return [row for row in self.state.history if "train_loss" in row]

    def on_epoch_end(self, epoch: int) -> None:
        # the engine logs once per epoch (log_every = steps per epoch): that row's loss is the epoch's mean
        losses = [row["loss"] for row in self.state.history if row.get("epoch") == epoch and "loss" in row]
        record = {"epoch": epoch + 1, "train_loss": losses[-1]}
        if self.val_set is not None:
            record["val_loss"] = predict(self.model, self.val_set, self.config.chunk_size, self.device,
                                         across_processes=True).loss()
            if self.config.select_on_validation and (self.state.best_metric is None
                                                     or record["val_loss"] < self.state.best_metric):
                self.state.best_metric, self.state.best_epoch = record["val_loss"], epoch + 1
                self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                record["selected"] = True
        self.state.history.append(record)


def head_optimizer(head: MILHead, config: MILTrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (``train.optim.adamw``, fused) over ``train.optim.param_groups`` (no decay on biases and norms)."""
    return adamw(param_groups(head, config.lr, config.weight_decay), config.lr, device)


def train_head(head: MILHead, train_set: BagDataset, config: MILTrainConfig, val_set: BagDataset | None = None,
               *, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
               reshard: bool = False) -> list[dict]:
    """Fit ``head`` on ``train_set``; returns one record per epoch (train loss, and validation loss when given).

    ``out_dir`` keeps the training state (``training_state.pt``, written after every epoch); ``resume`` continues
    from it to the same weights as an uninterrupted run. None trains in a temporary folder. At the end ``head``
    holds the selected weights (the lowest validation loss, else the last epoch's).

    Under torchrun (every process calls this with the same arguments) the head trains data-parallel, each process
    on its share of the bags of every step, and rank 0 writes the training state; ``reshard`` resumes a state
    saved by another number of processes (or ``accum_steps``), which is refused otherwise.
    """
    with ExitStack() as stack:
        stack.enter_context(torch_threads(config.threads))
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ssmamba-mil-"))
        trainer = _trainer(head, train_set, config, val_set, Path(out_dir), progress)
        trainer.fit(resume=resume, reshard=reshard)
        if trainer.best_weights is not None:
            head.load_state_dict(trainer.best_weights)
        return trainer.epochs_trained


def _trainer(head: MILHead, train_set: BagDataset, config: MILTrainConfig, val_set: BagDataset | None,
             out_dir: Path, progress: bool) -> MILTrainer:
    device = torch.device(config.device)
    if config.standardise_features:
        head.set_feature_statistics(*feature_statistics(train_set))
    head.to(device)
    loader = make_loader(TrainingBags(train_set, config.max_instances, config.instance_dropout), batch_size=1,
                         seed=config.seed, shuffle=True)
    optimizer = head_optimizer(head, config, device)
    steps_per_epoch = -(-len(loader) // config.accum_steps)  # this process's bags, accum_steps per step
    scheduler = warmup_cosine(optimizer, steps_per_epoch, config.epochs * steps_per_epoch, min_lr_ratio=0.0)
    labels = np.asarray([record.label for record in train_set.records])
    weights = class_weights(labels, head.num_classes) if config.balance_classes else None
    return MILTrainer(head, config, val_set, weights, optimizer=optimizer, scheduler=scheduler, loader=loader,
                      out_dir=out_dir, epochs=config.epochs, checkpoint_every=steps_per_epoch, grad_clip=None,
                      log_every=steps_per_epoch, progress=progress, precision=config.precision, device=device,
                      accum_steps=config.accum_steps)


@torch.no_grad()
def feature_statistics(dataset: BagDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation over every instance of every bag (float64 running sums).

    Under torchrun each process reads its share of the bags and the per-bag sums are added up in the order of the
    bags, on every process: the same numbers as one process gets, for a ``1 / processes`` share of the reading."""
    sums = []
    for index in shard(len(dataset)):
        features = dataset[index][0].double()
        sums.append((features.sum(0), (features * features).sum(0), len(features)))
    total, total_sq, count = 0.0, 0.0, 0
    for bag_sum, bag_sum_sq, size in gather_list(sums):
        total, total_sq, count = total + bag_sum, total_sq + bag_sum_sq, count + size
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return mean.float(), std.float()
