"""Stage 2: supervised fine-tuning of an SSMamba encoder (from a MAMIM checkpoint or from scratch).

Outputs in ``out``::

    config.yaml           the resolved configuration, the augmentations and the class names
    best/  last/          model.safetensors + config.json (class names, mean/std, input size in pretrained_cfg)
    training_state.pt     for --resume
    curves.png, log.txt, history.json
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from ssmamba.eval.inference import predict_proba
from ssmamba.io.atomic import atomic_write_text
from ssmamba.io.distributed import gather_shards, processes, shard
from ssmamba.io.runs import write_skipped
from ssmamba.models import create_model, save_pretrained
from ssmamba.train.config import Balancing, FinetuneConfig, Precision
from ssmamba.train.engine import Trainer, load_tensors, save_tensors
from ssmamba.train.optim import adamw, class_weights, param_groups, warmup_cosine
from ssmamba.train.plots import plot_curves
from ssmamba.train.sampling import make_loader
from ssmamba.train.setup import start_run, training_run

logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "Balancing", "FinetuneTrainer", "finetune"]


BN_RECALIBRATION_BATCHES = 32  # training batches that re-estimate an EMA model's BatchNorm statistics


def with_recalibrated_batch_norm(model: nn.Module, loader, device: torch.device,
                                 batches: int = BN_RECALIBRATION_BATCHES, bf16: bool = False) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``batches`` batches of ``loader``
    (``(images, ...)`` tuples); ``model`` and the random state are left as they were.

    An EMA of the weights averages BatchNorm's running statistics too, and those belong to none of the averaged
    weights: on crchp (ssmamba_tiny, 1,434 steps at decay 0.999) the EMA model scored val weighted F1 0.40 against
    0.74 for the live weights, and 0.73 once its statistics were re-estimated like this.
    """
    copied = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        # inside fork_rng: even starting a DataLoader's iterator draws from the global random state. update_bn
        # returns at once, reading no batch, when the model has no BatchNorm.
        update_bn((batch[0].to(device) for batch in itertools.islice(loader, batches)), copied)
    return copied.eval()


class FinetuneTrainer(Trainer):
    def __init__(self, model, cfg: FinetuneConfig, classes: list[str], val_loader, loss_weights, pretrained_cfg,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.cfg, self.classes, self.val_loader = cfg, classes, val_loader
        self.loss_weights = None if loss_weights is None else loss_weights.to(self.device)
        self.pretrained_cfg = pretrained_cfg
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) \
            if cfg.ema else None
        self._ema_eval: tuple[int, nn.Module] | None = None  # (step, EMA copy with re-estimated BatchNorm stats)

    def compute_loss(self, batch) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.train_model(images), labels, weight=self.loss_weights,
                               label_smoothing=self.cfg.label_smoothing)

    def on_step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated and saved: the live model, or the EMA with its BatchNorm statistics re-estimated (on a
        copy, once per step count, so the EMA state that --resume restores is untouched)."""
        if self.ema is None:
            return self.model
        if self._ema_eval is None or self._ema_eval[0] != self.state.step:
            model = with_recalibrated_batch_norm(self.ema.module, self.loader, self.device,
                                                 bf16=self.precision is Precision.BF16)
            self._ema_eval = (self.state.step, model)
        return self._ema_eval[1]

    def save_state(self) -> None:
        super().save_state()
        if self.ema is not None and self.job.is_main:
            save_tensors(self.ema.state_dict(), self.out_dir / "ema_state.pt")

    def load_state(self, reshard: bool = False) -> None:
        super().load_state(reshard)
        if self.ema is not None:
            self.ema.load_state_dict(load_tensors(self.out_dir / "ema_state.pt"))

    def on_checkpoint(self) -> None:
        save_pretrained(self.eval_model, self.out_dir / "last", pretrained_cfg=self.pretrained_cfg)

    def on_epoch_end(self, epoch: int) -> None:
        from ssmamba.eval.metrics import compute_metrics

        probs, labels = predict_proba(self.eval_model, self.val_loader, progress=False)  # this process's share
        probs, labels = gather_shards(probs), gather_shards(labels)  # the whole split, on every process
        metrics = compute_metrics(labels, probs, self.classes, n_bootstrap=0)
        score = float(metrics[self.cfg.monitor])
        train_loss = [row["loss"] for row in self.state.history if row.get("epoch") == epoch and "loss" in row]
        self.state.history.append({"step": self.state.step, "epoch": epoch + 1, "val_" + self.cfg.monitor: score,
                                   "val_accuracy": float(metrics["accuracy"]),
                                   "train_loss_epoch": float(np.mean(train_loss)) if train_loss else None})
        improved = self.state.best_metric is None or score > self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_epoch = score, epoch + 1
            self.state.epochs_without_improvement = 0
            if self.job.is_main:
                save_pretrained(self.eval_model, self.out_dir / "best", pretrained_cfg={
                    **self.pretrained_cfg, "best_epoch": epoch + 1, f"val_{self.cfg.monitor}": score})
        else:
            self.state.epochs_without_improvement += 1
        if self.cfg.patience and self.state.epochs_without_improvement >= self.cfg.patience:
            self.stop_requested = True  # the same on every process: they all scored the same predictions
        if not self.job.is_main:
            return
        logger.info("epoch %d: val %s %.4f (best %.4f at epoch %d)", epoch + 1, self.cfg.monitor, score,
                    self.state.best_metric, self.state.best_epoch)
        if self.stop_requested:
            logger.info("early stopping: no improvement of val %s for %d epochs", self.cfg.monitor, self.cfg.patience)
        plot_curves(self.state.history, self.out_dir / "curves.png", x="step",
                    keys=("loss", "val_" + self.cfg.monitor), title="fine-tuning")
        atomic_write_text(self.out_dir / "history.json", json.dumps(self.state.history, indent=1))


def finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool = True, overwrite: bool = False,
             reshard: bool = False) -> Path:
    """Fine-tune and return the directory of the best checkpoint (by the validation metric).

    ``cfg.out`` must be new or empty unless ``resume`` (continue the run in it) or ``overwrite`` (delete it first).
    Under torchrun every process trains on its share of each batch (``reshard``: resume a run saved by another
    number of processes).
    """
    with training_run(cfg.out, cfg.device, resume, overwrite) as (out, device):
        return _finetune(cfg, out, resume, progress, device, reshard)


def _finetune(cfg: FinetuneConfig, out: Path, resume: bool, progress: bool, device: torch.device,
              reshard: bool) -> Path:
    from ssmamba.data import load_dataset
    from ssmamba.data.transforms import FieldOfView, eval_transform, train_transform

    start_run(cfg.seed, cfg.threads)
    options = dict(crop_size=cfg.crop_size, group_column=cfg.group_column, seed=cfg.seed, strict=cfg.strict,
                   allow_leakage=cfg.allow_leakage)
    train_set = load_dataset(cfg.data, "train", None, **options)
    view = FieldOfView.of(train_set, cfg.img_size, (cfg.zoom_min, cfg.zoom_max))
    train_set.transform = train_tf = train_transform(cfg.img_size, zoom_range=view.train_zoom, hed=cfg.hed,
                                                     flips=cfg.flips, rot90=cfg.rot90, zoom_pad=cfg.zoom_min < 1)
    logger.info("%s", view.describe())
    mean, std = train_tf.config.mean, train_tf.config.std
    classes = list(train_set.classes)
    if len(classes) < 2:
        raise ValueError(f"{cfg.data}: fine-tuning needs at least 2 classes, found {len(classes)} ({classes}); "
                         "check the label column or class folders")
    val_set = load_dataset(cfg.data, "val", eval_transform(cfg.img_size, mean, std), classes=classes, **options)
    main = processes().is_main
    if main:
        write_skipped(out / "skipped.csv", list(dict.fromkeys(train_set.skipped + val_set.skipped)))
    labels = train_set.labels
    if cfg.max_train and len(train_set) > cfg.max_train:
        keep = sorted(torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed))
                      [: cfg.max_train].tolist())
        labels = labels[keep]
        train_set = torch.utils.data.Subset(train_set, keep)
    if cfg.max_val and len(val_set) > cfg.max_val:  # per-epoch validation is most of the cost on large splits
        keep = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(0))[: cfg.max_val]
        val_set = torch.utils.data.Subset(val_set, sorted(keep.tolist()))
    logger.info("fine-tuning on %d training and %d validation samples, classes %s", len(train_set), len(val_set),
                classes)

    weights = class_weights(labels, len(classes))
    sample_weights = weights[torch.as_tensor(labels)] if cfg.balance is Balancing.SAMPLER else None
    loader = make_loader(train_set, cfg.batch_size, cfg.seed, shuffle=True, num_workers=cfg.num_workers,
                         weights=sample_weights, drop_last=len(train_set) > cfg.batch_size)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, shard(len(val_set))),
                                             batch_size=cfg.batch_size * 2, num_workers=cfg.num_workers)

    model = create_model(cfg.model if cfg.init is None else None, checkpoint=cfg.init,
                         num_classes=len(classes), drop_path_rate=cfg.drop_path, img_size=cfg.img_size,
                         **cfg.model_args)
    pretrained_cfg = {"mean": list(mean), "std": list(std), "input_size": [3, cfg.img_size, cfg.img_size],
                      "class_names": classes, "crop_size": cfg.crop_size, "finetuned_from": cfg.init,
                      "native_side": view.native_side, "eval_zoom": view.eval_zoom}
    layer_decay = cfg.layer_decay if cfg.init else 1.0  # LLRD only makes sense for a pretrained encoder
    optimizer = adamw(param_groups(model, cfg.lr, cfg.weight_decay, layer_decay), cfg.lr, device)
    steps_per_epoch = -(-len(loader) // cfg.accum_steps)
    scheduler = warmup_cosine(optimizer, int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    trainer = FinetuneTrainer(model, cfg, classes, val_loader,
                              weights if cfg.balance is Balancing.LOSS else None, pretrained_cfg,
                              optimizer=optimizer, scheduler=scheduler, loader=loader, out_dir=out, epochs=cfg.epochs,
                              checkpoint_every=steps_per_epoch, grad_clip=cfg.grad_clip,
                              progress=progress, precision=cfg.precision, device=device,
                              accum_steps=cfg.accum_steps, sync_batch_norm=cfg.sync_batch_norm)
    if resume:  # refuse a damaged or crafted training state before anything in the run folder changes
        trainer.load_state(reshard)
    if main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump({
            "finetune": {**asdict(cfg), "balance": cfg.balance.value, "precision": cfg.precision.value},
            "augmentation": asdict(train_tf.config),
            "field_of_view": {"native_side": view.native_side, "eval_zoom": view.eval_zoom,
                              "train_zoom": list(view.train_zoom)},
            "classes": classes, "n_train": len(train_set), "n_val": len(val_set),
            "processes": processes().world_size}, sort_keys=False))
    trainer.fit()
    return out / "best"
