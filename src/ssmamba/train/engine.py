"""The step engine shared by pretraining and fine-tuning: optimise, log, checkpoint, resume, stop on NaN.

A :class:`Trainer` subclass says what one step computes (``compute_loss``) and what happens at checkpoints and at
the end of an epoch; the engine owns the loop. A training state (``training_state.pt``: model, optimiser, schedule,
step, RNG, history) is written atomically, so an interrupted run resumes with ``resume=True`` and continues to the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ssmamba.errors import CheckpointError
from ssmamba.ops.hardware import cpu_has_native_bf16
from ssmamba.train.sampling import set_epoch

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "RunState", "NonFiniteLossError", "Precision", "STATE_NAME", "SUMMARY_NAME",
           "save_tensors", "load_tensors"]

STATE_NAME = "training_state.pt"
SUMMARY_NAME = "run_state.json"  # step, epoch, CPU seconds and best metric at the last checkpoint, for people and tools


def save_tensors(payload: dict, path: Path) -> None:
    """``torch.save`` through a temporary sibling and a rename: an interruption or a full disk never leaves a
    half-written file, and the previous one survives."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except RuntimeError as error:  # torch reports a failed write (full disk, size limit) as a RuntimeError
        raise CheckpointError(f"could not write {path} ({str(error).splitlines()[0]}): is the disk full? The "
                              f"previous {path.name}, if any, is intact; free space and rerun with --resume") from error
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path) -> dict:
    """Load a file written by :func:`save_tensors` with ``weights_only=True``: tensors, numbers, strings and
    containers only, so a crafted file cannot run code. Anything else is refused with a :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"refusing to load {path}: it is not a plain training state that loads with "
                              f"weights_only=True ({str(error).splitlines()[0]}). It is damaged or was not written "
                              "by ssmamba; delete it and start the run again without --resume") from error


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


class Precision(str, Enum):
    """Arithmetic of the training forward pass. ``bf16`` runs it under bfloat16 autocast (convolutions and matrix
    products in bfloat16; weights, optimiser state, the selective scan and the loss stay float32): about 1.25x more
    images/s on a CPU with AVX512-BF16 (benchmarks/results/precision.md), more on GPUs; several times slower on a
    CPU without bfloat16 hardware (AVX2 only), where the Trainer warns."""

    FP32 = "fp32"
    BF16 = "bf16"


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one row per logged step/epoch
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    cpu_seconds: float = 0.0  # CPU time of this process spent in fit(), summed over resumed runs


class Trainer:
    """Step-based training loop. Subclasses implement :meth:`compute_loss` and may override the hooks.

    The model moves to ``device`` here, before the optimiser takes its first step, and each batch (a tuple of
    tensors) follows it. A resumed run restores the CPU random state; on a GPU it continues, but bit-identical
    resumption is only tested on the CPU.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader, out_dir: Path,
                 epochs: int, checkpoint_every: int = 0, grad_clip: float | None = 1.0, log_every: int = 10,
                 progress: bool = True, precision: Precision = Precision.FP32, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model, self.optimizer, self.scheduler, self.loader = model.to(self.device), optimizer, scheduler, loader
        self.precision = Precision(precision)
        if self.precision is Precision.BF16 and self.device.type == "cpu" and cpu_has_native_bf16() is False:
            logger.warning("--precision bf16 on a CPU without bfloat16 hardware (no AVX512-BF16/AMX): autocast is "
                           "emulated and trains several times slower than fp32 (7x for ssmamba_tiny measured); "
                           "use --precision fp32 here")
        self.out_dir = Path(out_dir)
        self.epochs, self.checkpoint_every, self.grad_clip = epochs, checkpoint_every, grad_clip
        self.log_every, self.progress = log_every, progress
        self.steps_per_epoch = len(loader)
        self.total_steps = epochs * self.steps_per_epoch
        self.state = RunState()
        self.stop_requested = False

    # ---- to implement ----------------------------------------------------------------------------------------
    def compute_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def on_checkpoint(self) -> None:
        """Called after each training-state checkpoint (e.g. save the encoder, draw reconstructions)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch (e.g. validate, keep the best model, set ``self.stop_requested``)."""

    # ---- state -----------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_NAME

    def save_state(self) -> None:
        payload = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "run": self.state.__dict__, "torch_rng": torch.get_rng_state(),
        }
        save_tensors(payload, self.state_path)  # atomic: an interruption never leaves a half-written state

    def load_state(self) -> None:
        if not self.state_path.is_file():
            raise FileNotFoundError(f"cannot resume: no {STATE_NAME} in {self.out_dir}")
        payload = load_tensors(self.state_path)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = RunState(**payload["run"])
        torch.set_rng_state(payload["torch_rng"])
        logger.info("resumed from %s at step %d (epoch %d)", self.state_path, self.state.step, self.state.epoch)

    def checkpoint(self) -> None:
        self.save_state()
        summary = {k: v for k, v in self.state.__dict__.items() if k != "history"}
        summary["total_epochs"] = self.epochs
        tmp = self.out_dir / (SUMMARY_NAME + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, self.out_dir / SUMMARY_NAME)
        with torch.random.fork_rng(devices=[]):  # hooks must not shift the RNG a resumed run restores
            self.on_checkpoint()

    # ---- loop ------------------------------------------------------------------------------------------------
    def _optimise(self, loss: torch.Tensor) -> float:
        value = loss.item()
        if not math.isfinite(value):
            last = f"the last good checkpoint is {self.state_path}" if self.state_path.exists() else \
                "no checkpoint was written yet"
            raise NonFiniteLossError(f"loss became {value} at step {self.state.step} (epoch {self.state.epoch}); "
                                     f"training stopped, {last}. Try a lower learning rate or check the inputs.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return value

    def fit(self, resume: bool = False) -> RunState:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state()
        bar = tqdm(total=self.total_steps, initial=self.state.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=type(self).__name__.replace("Trainer", "").lower() or "train")
        running, seen, started = 0.0, 0, time.perf_counter()
        cpu_mark = time.process_time()
        while self.state.epoch < self.epochs and not self.stop_requested:
            epoch = self.state.epoch
            start_batch = self.state.step - epoch * self.steps_per_epoch
            set_epoch(self.loader, epoch, start_batch)
            self.model.train()
            for batch in self.loader:
                batch = [part.to(self.device, non_blocking=True) for part in batch]
                with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                    enabled=self.precision is Precision.BF16):
                    loss = self.compute_loss(batch)
                loss = self._optimise(loss.float())
                self.state.step += 1
                running, seen = running + loss, seen + 1
                images = self.state.step * self.loader.batch_size
                bar.update(1)
                if self.state.step % self.log_every == 0 or self.state.step == self.total_steps:
                    rate = seen * self.loader.batch_size / max(time.perf_counter() - started, 1e-9)
                    now = time.process_time()
                    self.state.cpu_seconds, cpu_mark = self.state.cpu_seconds + now - cpu_mark, now
                    row = {"step": self.state.step, "epoch": epoch, "loss": running / seen,
                           "lr": max(g["lr"] for g in self.optimizer.param_groups), "images": images,
                           "cpu_min": self.state.cpu_seconds / 60}
                    self.state.history.append(row)
                    bar.set_postfix(loss=f"{running / seen:.4f}", img_s=f"{rate:.1f}")
                    logger.info("step %d/%d (epoch %d): loss %.4f, lr %.2e (largest group), %.1f images/s", self.state.step,
                                self.total_steps, epoch + 1, row["loss"], row["lr"], rate)
                    running, seen, started = 0.0, 0, time.perf_counter()
                if self.checkpoint_every and self.state.step % self.checkpoint_every == 0:
                    self.checkpoint()
            self.state.epoch = epoch + 1
            self.on_epoch_end(epoch)
            now = time.process_time()
            self.state.cpu_seconds, cpu_mark = self.state.cpu_seconds + now - cpu_mark, now
        bar.close()
        self.checkpoint()
        return self.state
