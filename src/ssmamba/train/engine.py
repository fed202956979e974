"""The step engine shared by pretraining, fine-tuning and MIL head training: optimise, log, checkpoint, resume,
stop on NaN.

A :class:`Trainer` subclass says what one step computes (``compute_loss``) and what happens at checkpoints and at
the end of an epoch; the engine owns the loop. A training state (``training_state.pt``: model, optimiser, schedule,
step, RNG, history) is written atomically, so an interrupted run resumes with ``resume=True`` and continues to the
same weights as an uninterrupted one.

Under ``torchrun`` the model trains as :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged
over the processes, each of which reads its share of every batch: see :class:`~ssmamba.train.sampling.
EpochSampler`); rank 0 alone logs, shows progress and writes the state and every checkpoint, and a run resumes with
the same number of processes (or with ``reshard=True``). ``accum_steps`` micro-batches are summed into each
optimiser step, so a step sees ``batch_size x accum_steps x processes`` images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ssmamba.errors import CheckpointError
from ssmamba.io.distributed import all_gather, mean_over_processes, processes
from ssmamba.ops.hardware import cpu_has_native_bf16
from ssmamba.train.config import Precision
from ssmamba.train.sampling import set_epoch

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "RunState", "NonFiniteLossError", "Precision", "STATE_NAME", "SUMMARY_NAME",
           "save_tensors", "load_tensors", "LayoutChangedError"]

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


class LayoutChangedError(CheckpointError):
    """A run is resumed with another number of processes or images per step, and no re-sharding was asked for."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


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
    tensors) follows it. ``self.model`` is the module itself (for checkpoints and hooks); ``compute_loss`` runs the
    forward through ``self.train_model``, its DDP wrapper under torchrun. ``sync_batch_norm`` normalises the
    BatchNorm layers (the stem and conv stages of SSMamba) over the images of every process (CUDA only: torch's
    SyncBatchNorm has no CPU kernels). A resumed run restores the CPU random state of each process; on a GPU it
    continues, but bit-identical resumption is only tested on the CPU.
    """

    unit = "images"  # what a loader batch holds, in the messages (``images_per_step`` counts these)
    layout_options = "--batch-size and --accum-steps"  # the options that set how many make a step

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader, out_dir: Path,
                 epochs: int, checkpoint_every: int = 0, grad_clip: float | None = 1.0, log_every: int = 10,
                 progress: bool = True, precision: Precision = Precision.FP32, device: str | torch.device = "cpu",
                 accum_steps: int = 1, sync_batch_norm: bool = False):
        self.device = torch.device(device)
        self.job = processes()
        if accum_steps < 1:
            raise ValueError(f"--accum-steps must be >= 1, got {accum_steps}")
        if sync_batch_norm and self.job.distributed:
            if self.device.type != "cuda":
                raise ValueError("--sync-batch-norm needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernels); "
                                 "without it each process normalises over its own batch")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same parameters, the optimiser keeps them
        self.model, self.optimizer, self.scheduler, self.loader = model.to(self.device), optimizer, scheduler, loader
        self.train_model: nn.Module = self.model
        if self.job.distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                gradient_as_bucket_view=True)  # gradients live in DDP's buffers: no second copy of them
            # each process draws its own dropout / drop-path masks (the weights were initialised alike)
            if self.job.rank:
                torch.manual_seed(torch.initial_seed() + 1_000_003 * self.job.rank)
        self.precision = Precision(precision)
        if self.precision is Precision.BF16 and self.device.type == "cpu" and cpu_has_native_bf16() is False \
                and self.job.is_main:
            logger.warning("--precision bf16 on a CPU without bfloat16 hardware (no AVX512-BF16/AMX): autocast is "
                           "emulated and trains several times slower than fp32 (7x for ssmamba_tiny measured); "
                           "use --precision fp32 here")
        self.out_dir = Path(out_dir)
        self.epochs, self.checkpoint_every, self.grad_clip = epochs, checkpoint_every, grad_clip
        self.log_every, self.progress = log_every, progress and self.job.is_main
        self.accum_steps = accum_steps
        self.batches_per_epoch = len(loader)
        self.steps_per_epoch = -(-self.batches_per_epoch // accum_steps)
        self.total_steps = epochs * self.steps_per_epoch
        self.batch_size = getattr(loader, "batch_size", None) or 1  # a plain iterable of batches counts as 1
        self.images_per_step = self.batch_size * accum_steps * self.job.world_size
        self.micro_position = 0  # index of the batch being computed among the accum_steps x processes of a step
        self.state = RunState()
        self.stop_requested = False

    # ---- to implement ----------------------------------------------------------------------------------------
    def compute_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def on_checkpoint(self) -> None:
        """Called on rank 0 after each training-state checkpoint (e.g. save the encoder, draw reconstructions)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called on every process after each epoch (e.g. validate, keep the best model, set
        ``self.stop_requested``, which must then be the same on every process)."""

    def on_step(self) -> None:
        """Called after each optimiser step (e.g. update an EMA of the weights)."""

    def state_extras(self) -> dict:
        """Tensors (and plain values) a subclass keeps in the training state beside the model and optimiser, e.g.
        the weights of its best epoch: written in the same atomic file, so they always match the rest."""
        return {}

    def load_state_extras(self, extras: dict) -> None:
        """Restore what :meth:`state_extras` returned when the state was saved (``{}`` for a state without any)."""

    # ---- state -----------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_NAME

    @property
    def layout(self) -> dict[str, int]:
        """How a step is cut into batches: what a resumed run must match (unless it re-shards)."""
        return {"world_size": self.job.world_size, "images_per_step": self.images_per_step,
                "steps_per_epoch": self.steps_per_epoch}

    def save_state(self) -> None:
        """Write the training state (rank 0); every process calls it, to hand over its random state."""
        rng = all_gather(torch.get_rng_state())
        if not self.job.is_main:
            return
        payload = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "run": self.state.__dict__, "torch_rng": rng[0],
            "process_rng": rng, "layout": self.layout, "extras": self.state_extras(),
        }
        save_tensors(payload, self.state_path)  # atomic: an interruption never leaves a half-written state

    def load_state(self, reshard: bool = False) -> None:
        """Restore the last training state. A run saved with another number of processes (or images per step) is
        refused with :class:`LayoutChangedError`, unless ``reshard``: then it continues from the same place in the
        epoch (at most one step's images are seen twice), no longer identical to an uninterrupted run."""
        if not self.state_path.is_file():
            raise FileNotFoundError(f"cannot resume: no {STATE_NAME} in {self.out_dir}")
        payload = load_tensors(self.state_path)
        saved = payload.get("layout", {"world_size": 1, "images_per_step": self.images_per_step,
                                       "steps_per_epoch": self.steps_per_epoch})
        changed = {k: (saved[k], v) for k, v in self.layout.items() if saved[k] != v}
        if changed and not reshard:
            raise LayoutChangedError(
                f"{self.state_path} was saved by {saved['world_size']} process(es) with {saved['images_per_step']} "
                f"{self.unit} per step, and this run has {self.job.world_size} with {self.images_per_step}: resume "
                f"with the same processes, {self.layout_options}, or pass --reshard to continue with the new "
                "layout (no longer identical to an uninterrupted run)")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = RunState(**payload["run"])
        self.load_state_extras(payload.get("extras", {}))
        rng = payload.get("process_rng", [payload["torch_rng"]])
        if self.job.rank < len(rng) and not changed:
            torch.set_rng_state(rng[self.job.rank])
        elif self.job.is_main:
            torch.set_rng_state(rng[0])
        if changed:
            done = (self.state.step - self.state.epoch * saved["steps_per_epoch"]) * saved["images_per_step"]
            self.state.step = self.state.epoch * self.steps_per_epoch + done // self.images_per_step
            self.scheduler.last_epoch = self.state.step - 1
            self.scheduler.step()  # the learning rates of the new step count
            if self.job.is_main:
                logger.warning("re-sharded %s (%s): continuing at step %d of %d", self.state_path,
                               ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()), self.state.step,
                               self.total_steps)
        if self.job.is_main:
            logger.info("resumed from %s at step %d (epoch %d)", self.state_path, self.state.step, self.state.epoch)

    def checkpoint(self) -> None:
        self.save_state()
        if not self.job.is_main:
            return
        summary = {k: v for k, v in self.state.__dict__.items() if k != "history"}
        summary["total_epochs"] = self.epochs
        tmp = self.out_dir / (SUMMARY_NAME + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, self.out_dir / SUMMARY_NAME)
        with torch.random.fork_rng(devices=[]):  # hooks must not shift the RNG a resumed run restores
            self.on_checkpoint()

    # ---- loop ------------------------------------------------------------------------------------------------
    def _check_finite(self, value: float) -> None:
        if not math.isfinite(value):
            last = f"the last good checkpoint is {self.state_path}" if self.state_path.exists() else \
                "no checkpoint was written yet"
            raise NonFiniteLossError(f"loss became {value} at step {self.state.step} (epoch {self.state.epoch}); "
                                     f"training stopped, {last}. Try a lower learning rate or check the inputs.")

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.on_step()

    def _train_step(self, batches) -> float:
        """One optimiser step over the micro-batches ``batches``: each loss is scaled by ``1 / len(batches)`` and
        back-propagated (DDP averages over processes at the last one); returns the mean loss over every process.
        A non-finite loss stops the run on every process before the weights change."""
        total = torch.zeros((), device=self.device)
        for index, batch in enumerate(batches):
            self.micro_position = index * self.job.world_size + self.job.rank
            batch = [part.to(self.device, non_blocking=True) for part in batch]
            last = index == len(batches) - 1
            sync = self.train_model.no_sync() if self.job.distributed and not last else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                    enabled=self.precision is Precision.BF16):
                    loss = self.compute_loss(batch).float() / len(batches)
                loss.backward()  # also when not finite: every process must take part in DDP's gradient reduction
            total = total + loss.detach()
        value = mean_over_processes(total).item()
        if not math.isfinite(value):  # on every process alike, before the weights change
            self.optimizer.zero_grad(set_to_none=True)
            self._check_finite(value)
        self._optimizer_step()
        return value

    def _epoch_steps(self, epoch: int):
        """The micro-batch groups of the rest of ``epoch``: ``accum_steps`` loader batches per step (the last step
        of an epoch takes what is left)."""
        start_batch = (self.state.step - epoch * self.steps_per_epoch) * self.accum_steps
        set_epoch(self.loader, epoch, start_batch)
        group = []
        for index, batch in enumerate(self.loader, start=start_batch):
            group.append(batch)
            if len(group) == self.accum_steps or index == self.batches_per_epoch - 1:
                yield group
                group = []

    def fit(self, resume: bool = False, reshard: bool = False) -> RunState:
        if self.job.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state(reshard)
        if self.job.is_main:
            logger.info("%d process(es) x %d %s x %d accumulation step(s) = %d %s per step, %d steps",
                        self.job.world_size, self.batch_size, self.unit, self.accum_steps, self.images_per_step,
                        self.unit, self.total_steps)
        bar = tqdm(total=self.total_steps, initial=self.state.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=type(self).__name__.replace("Trainer", "").lower() or "train")
        cpu_mark = time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # DDP's warning for depthwise conv weights (C, 1, k, k): their gradients' stride along the size-1 axis
            # differs from the weights', the memory layout is the same
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self._fit_epochs(bar, cpu_mark)
        bar.close()
        self.checkpoint()
        return self.state

    def _fit_epochs(self, bar, cpu_mark: float) -> None:
        running, seen, started = 0.0, 0, time.perf_counter()
        while self.state.epoch < self.epochs and not self.stop_requested:
            epoch = self.state.epoch
            self.model.train()
            for batches in self._epoch_steps(epoch):
                loss = self._train_step(batches)
                self.state.step += 1
                running, seen = running + loss, seen + 1
                images = self.state.step * self.images_per_step
                bar.update(1)
                if self.state.step % self.log_every == 0 or self.state.step == self.total_steps:
                    rate = seen * self.images_per_step / max(time.perf_counter() - started, 1e-9)
                    now = time.process_time()
                    self.state.cpu_seconds, cpu_mark = self.state.cpu_seconds + now - cpu_mark, now
                    row = {"step": self.state.step, "epoch": epoch, "loss": running / seen,
                           "lr": max(g["lr"] for g in self.optimizer.param_groups), "images": images,
                           "cpu_min": self.state.cpu_seconds / 60}
                    self.state.history.append(row)
                    bar.set_postfix(loss=f"{running / seen:.4f}", img_s=f"{rate:.1f}")
                    if self.job.is_main:
                        logger.info("step %d/%d (epoch %d): loss %.4f, lr %.2e (largest group), %.1f %s/s",
                                    self.state.step, self.total_steps, epoch + 1, row["loss"], row["lr"], rate,
                                    self.unit)
                    running, seen, started = 0.0, 0, time.perf_counter()
                if self.checkpoint_every and self.state.step % self.checkpoint_every == 0:
                    self.checkpoint()
            self.state.epoch = epoch + 1
            self.on_epoch_end(epoch)
            now = time.process_time()
            self.state.cpu_seconds, cpu_mark = self.state.cpu_seconds + now - cpu_mark, now
