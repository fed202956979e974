"""Stage 1: MAMIM pretraining of an SSMamba encoder on the user's own images (labels ignored).

Outputs in ``out``::

    config.yaml            the resolved run configuration (augmentations included)
    checkpoint/            the encoder: model.safetensors + config.json (load with create_model(checkpoint=...))
    training_state.pt      everything needed for --resume
    reconstruction_XXXXXX.png, loss.png, log.txt
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from ssmamba.io.atomic import atomic_write_text
from ssmamba.io.distributed import processes
from ssmamba.io.runs import write_skipped
from ssmamba.models import create_model, save_pretrained
from ssmamba.ssl import MAMIM
from ssmamba.train.config import PretrainConfig
from ssmamba.train.engine import Trainer
from ssmamba.train.optim import adamw, param_groups, warmup_cosine
from ssmamba.train.plots import plot_curves, save_reconstruction_grid
from ssmamba.train.sampling import make_loader
from ssmamba.train.setup import start_run, training_run

logger = logging.getLogger(__name__)

__all__ = ["PretrainConfig", "PretrainTrainer", "pretrain"]


class PretrainTrainer(Trainer):
    def __init__(self, mamim: MAMIM, cfg: PretrainConfig, mean, std, preview: torch.Tensor, **kwargs):
        super().__init__(mamim, **kwargs)
        self.cfg, self.mean, self.std, self.preview = cfg, mean, std, preview

    def compute_loss(self, batch) -> torch.Tensor:
        images, _ = batch
        # masks depend on (seed, step) and the batch's place in the step only, so a resumed run draws the same ones
        # and so does a run that splits its steps over processes or accumulation steps in another way
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.state.step)
        first = self.micro_position * self.loader.batch_size
        mask = self.model.masker(first + len(images), *images.shape[-2:], generator=generator,
                                 device=images.device)[first:]
        loss, _, _ = self.train_model(images, mask=mask)
        return loss

    def on_checkpoint(self) -> None:
        mamim: MAMIM = self.model
        save_pretrained(mamim.encoder, self.out_dir / "checkpoint", pretrained_cfg={
            "mean": list(self.mean), "std": list(self.std), "input_size": [3, self.cfg.img_size, self.cfg.img_size],
            "pretraining": "mamim", "pretraining_steps": self.state.step})
        mamim.eval()
        with torch.no_grad():
            _, prediction, mask = mamim(self.preview.to(self.device), generator=torch.Generator().manual_seed(0))
            prediction, mask = prediction.float().cpu(), mask.cpu()
            masked = self.preview * (1 - mamim.upsample_mask(mask, *self.preview.shape[-2:]))
            recon = mamim.reconstruction(self.preview, prediction, mask)
        mamim.train()
        save_reconstruction_grid(self.preview, masked, recon, self.out_dir / f"reconstruction_{self.state.step:06d}.png",
                                 self.mean, self.std, title=f"MAMIM step {self.state.step}")
        if self.state.history:
            plot_curves(self.state.history, self.out_dir / "loss.png", title="MAMIM reconstruction loss")


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False,
             reshard: bool = False) -> Path:
    """Run MAMIM pretraining; returns the encoder checkpoint directory.

    ``cfg.out`` must be new or empty unless ``resume`` (continue the run in it) or ``overwrite`` (delete it first).
    Under torchrun every process trains on its share of each batch (``reshard``: resume a run saved by another
    number of processes).
    """
    with training_run(cfg.out, cfg.device, resume, overwrite) as (out, device):
        return _pretrain(cfg, out, resume, progress, device, reshard)


def _pretrain(cfg: PretrainConfig, out: Path, resume: bool, progress: bool, device: torch.device,
              reshard: bool) -> Path:
    from ssmamba.data import load_unlabelled
    from ssmamba.data.transforms import pretrain_transform

    start_run(cfg.seed, cfg.threads)
    transform = pretrain_transform(cfg.img_size, zoom_range=(cfg.zoom_min, cfg.zoom_max), hed=cfg.hed,
                                   flips=cfg.flips, rot90=cfg.rot90)
    dataset = load_unlabelled(cfg.data, split=cfg.split, transform=transform, crop_size=cfg.crop_size,
                              strict=cfg.strict, seed=cfg.seed, allow_leakage=cfg.allow_leakage)
    main = processes().is_main
    if main:
        write_skipped(out / "skipped.csv", dataset.skipped)
        logger.info("field of view: MAMIM views of %d px, each %s-%s native px across (zoom %g-%g of native "
                    "resolution; median image short side %d px)", cfg.img_size, f"{cfg.img_size / cfg.zoom_max:.0f}",
                    f"{cfg.img_size / cfg.zoom_min:.0f}", cfg.zoom_min, cfg.zoom_max, dataset.median_short_side())
    if cfg.max_images and len(dataset) > cfg.max_images:
        keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.max_images]
        dataset = torch.utils.data.Subset(dataset, sorted(keep.tolist()))
    logger.info("pretraining on %d images", len(dataset))
    mean, std = transform.config.mean, transform.config.std

    encoder = create_model(cfg.model, num_classes=0, **cfg.model_args)
    mamim = MAMIM(encoder, mask_ratio=cfg.mask_ratio, patch_size=cfg.mask_patch_size,
                  decoder_levels=cfg.decoder_levels)
    loader = make_loader(dataset, cfg.batch_size, cfg.seed, shuffle=True, num_workers=cfg.num_workers,
                         drop_last=len(dataset) > cfg.batch_size)
    if len(loader) == 0:
        raise ValueError(f"{cfg.data}: no images to pretrain on")
    optimizer = adamw(param_groups(mamim, cfg.lr, cfg.weight_decay), cfg.lr, device, betas=(0.9, 0.95))
    steps_per_epoch = -(-len(loader) // cfg.accum_steps)
    scheduler = warmup_cosine(optimizer, int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        preview = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))])
    trainer = PretrainTrainer(mamim, cfg, mean, std, preview, optimizer=optimizer, scheduler=scheduler,
                              loader=loader, out_dir=out, epochs=cfg.epochs,
                              checkpoint_every=cfg.checkpoint_every or steps_per_epoch, grad_clip=cfg.grad_clip,
                              progress=progress, precision=cfg.precision, device=device,
                              accum_steps=cfg.accum_steps, sync_batch_norm=cfg.sync_batch_norm)
    if resume:  # refuse a damaged or crafted training state before anything in the run folder changes
        trainer.load_state(reshard)
    if main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(
            {"pretrain": {**asdict(cfg), "precision": cfg.precision.value}, "augmentation": asdict(transform.config),
             "n_images": len(dataset), "processes": processes().world_size},
            sort_keys=False))
    trainer.fit()
    logger.info("encoder saved to %s", out / "checkpoint")
    return out / "checkpoint"
