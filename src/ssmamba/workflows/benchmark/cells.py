"""One benchmark cell: (entry, seed) -> optional MAMIM stage -> fine-tuning -> test evaluation, resumable.

A cell lives in ``OUT/cells/<entry>/seed_<k>/``::

    cell.json          what the cell computes (entry, seed, data, recipe); a rerun with another recipe is an error
    pretrain/          MAMIM run folder (entries with a MAMIM stage); DONE when finished
    finetune/          fine-tuning run folder (best/ is the checkpoint chosen on validation); DONE when finished
    predictions.npz    test labels and class probabilities at every magnification factor
    result.json        metrics, costs and timings: written last, atomically; a cell with it is never recomputed

A cell killed at any point continues where it stopped: finished stages are skipped, an interrupted stage resumes
from its training state (the trainer's exact resume), and a missing magnification factor is evaluated from the
saved checkpoint without retraining.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssmamba.train.engine import STATE_NAME, SUMMARY_NAME
from ssmamba.workflows.benchmark.entries import Entry, saved_entry

logger = logging.getLogger(__name__)

__all__ = ["Cell", "CellBusy", "RecipeMismatchError", "write_json_atomic", "SCALARS"]

DONE = "DONE"
SCALARS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc")
SPEED_BATCH, SPEED_REPEATS = 32, 3


class RecipeMismatchError(ValueError):
    """A cell folder holds a cell computed with another recipe, entry or data set."""


class CellBusy(RuntimeError):
    """Another live process is computing this cell (it holds the cell's lock)."""


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def _factor_key(factor: float) -> str:
    return f"x{factor:g}"


@dataclass
class Cell:
    """A (entry, seed) cell of a benchmark in ``root``; ``recipe`` is the shared training recipe (a dict of
    :class:`~ssmamba.workflows.benchmark.runner.BenchmarkConfig` fields) and ``data`` the data set."""

    root: Path
    entry: Entry
    seed: int
    data: str
    recipe: dict

    @property
    def key(self) -> dict:
        return {"entry": self.entry.to_dict(), "seed": self.seed, "data": self.data, "recipe": self.recipe}

    @property
    def result_path(self) -> Path:
        return self.root / "result.json"

    def result(self) -> dict | None:
        return json.loads(self.result_path.read_text()) if self.result_path.is_file() else None

    def is_done(self, factors: tuple[float, ...]) -> bool:
        result = self.result()
        return result is not None and all(_factor_key(f) in result["test"] for f in (1.0, *factors))

    # ---- locking ------------------------------------------------------------------------------------------
    def _lock_path(self) -> Path:
        return self.root / ".lock"

    def acquire(self) -> None:
        """Claim the cell for this process; a lock left by a dead process on this host is taken over."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._lock_path()
        mine = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = json.loads(path.read_text() or "{}")
                if holder.get("host") == mine["host"] and holder.get("pid") == mine["pid"]:
                    return
                if holder.get("host") != mine["host"] or _alive(int(holder.get("pid", -1))):
                    raise CellBusy(f"{self.root} is being computed by {holder}") from None
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
            return
        raise CellBusy(f"could not claim {self.root}")

    def release(self) -> None:
        self._lock_path().unlink(missing_ok=True)

    # ---- running ------------------------------------------------------------------------------------------
    def check_key(self) -> None:
        path = self.root / "cell.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            current = json.loads(json.dumps(self.key, default=str))
            # an option added in a later version, left off (None), does not change what an older cell computed
            added = {k for k, v in current["recipe"].items() if k not in saved.get("recipe", {}) and v is None}
            current["recipe"] = {k: v for k, v in current["recipe"].items() if k not in added}
            # the architecture says what was built; model_args only how it was asked for
            for key in (saved, current):
                key["entry"] = {k: v for k, v in saved_entry(key["entry"]).items() if k != "model_args"}
            if saved != current:
                changed = sorted(k for k in self.recipe if saved.get("recipe", {}).get(k) != self.recipe[k])
                raise RecipeMismatchError(
                    f"{self.root} was computed with another recipe or data set (differs in: "
                    f"{changed or 'entry/data'}); use a new --out for a new recipe")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, self.key)

    def run(self, factors: tuple[float, ...], device: str, num_workers: int, progress: bool = False) -> dict:
        """Compute what is missing of this cell and return its result."""
        self.check_key()
        started = time.perf_counter()
        checkpoint = self._pretrain(device, num_workers, progress) if self.entry.mamim else None
        best = self._finetune(checkpoint, device, num_workers, progress)
        result = self.result() or {}
        test = dict(result.get("test", {}))
        missing = [f for f in (1.0, *factors) if _factor_key(f) not in test]
        if missing:
            test.update(self.evaluate(best, missing, device, num_workers))
        result = {**self._costs(best), **result, "test": test,
                  "wall_s": result.get("wall_s", 0.0) + time.perf_counter() - started}
        if "inference_img_s" not in result:
            result["inference_img_s"] = _inference_speed(best, self.recipe["img_size"], device)
        write_json_atomic(self.result_path, result)
        return result

    def _stage(self, name: str, run, cfg, progress: bool) -> Path:
        """Run a stage unless its DONE marker exists; an interrupted stage resumes from its training state."""
        folder = self.root / name
        if not (folder / DONE).is_file():
            resume = (folder / STATE_NAME).is_file()
            logger.info("%s %s seed %d: %s%s", name, self.entry.name, self.seed, "resuming " if resume else "",
                        folder)
            # the stage folder belongs to this cell: without a training state to resume, start it afresh
            run(cfg, resume=resume, progress=progress, overwrite=not resume)
            (folder / DONE).write_text("")
        return folder

    def _pretrain(self, device: str, num_workers: int, progress: bool) -> Path:
        from ssmamba.train.pretrain import PretrainConfig, pretrain

        r = self.recipe
        cfg = PretrainConfig(data=self.data, out=str(self.root / "pretrain"), model=self.entry.model,
                             model_args=dict(self.entry.model_args), split="train", img_size=r["img_size"],
                             crop_size=r["crop_size"], epochs=r["pretrain_epochs"], batch_size=r["batch_size"],
                             mask_patch_size=r["mask_patch_size"], max_images=r["pretrain_max_images"],
                             precision=r["precision"], device=device,
                             num_workers=num_workers, seed=self.seed)
        return self._stage("pretrain", pretrain, cfg, progress) / "checkpoint"

    def _finetune(self, checkpoint: Path | None, device: str, num_workers: int, progress: bool) -> Path:
        from ssmamba.train.finetune import FinetuneConfig, finetune

        r = self.recipe
        cfg = FinetuneConfig(
            data=self.data, out=str(self.root / "finetune"), model=self.entry.model,
            model_args=dict(self.entry.model_args), init=str(checkpoint) if checkpoint else None,
            img_size=r["img_size"], crop_size=r["crop_size"], zoom_min=r["zoom_min"], zoom_max=r["zoom_max"], epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"],
            weight_decay=r["weight_decay"], drop_path=r["drop_path"], balance=r["balance"], monitor=r["monitor"],
            patience=0, max_train=r["max_train"], max_val=r.get("max_val"), precision=r["precision"], device=device, num_workers=num_workers,
            seed=self.seed)
        return self._stage("finetune", finetune, cfg, progress) / "best"

    def _costs(self, best: Path) -> dict:
        def summary(stage: str) -> dict:
            path = self.root / stage / SUMMARY_NAME
            return json.loads(path.read_text()) if path.is_file() else {}

        from ssmamba.models import create_model

        fine = summary("finetune")
        model = create_model(checkpoint=best)
        return {"entry": self.entry.name, "seed": self.seed, "family": self.entry.family,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "cpu_s": {"pretrain": summary("pretrain").get("cpu_seconds", 0.0) if self.entry.mamim else 0.0,
                          "finetune": fine.get("cpu_seconds", 0.0)},
                "best_epoch": fine.get("best_epoch"), "val_" + self.recipe["monitor"]: fine.get("best_metric"),
                "threads": torch.get_num_threads()}

    def evaluate(self, best: Path, factors: list[float], device: str, num_workers: int, split: str = "test") -> dict:
        """``split``'s metrics (the test split's, unless a validation-only study asks for another) at each
        magnification factor; probabilities go to ``predictions.npz``."""
        from ssmamba.data import load_dataset
        from ssmamba.data.load import SourceKind, detect_kind
        from ssmamba.data.transforms import eval_transform
        from ssmamba.eval.inference import predict_proba
        from ssmamba.eval.metrics import compute_metrics
        from ssmamba.models import create_model

        model = create_model(checkpoint=best).eval().to(device)
        cfg = model.pretrained_cfg
        classes, crop = cfg["class_names"], self.recipe["crop_size"]
        points = detect_kind(Path(self.data)) is SourceKind.POINTS
        path = self.root / "predictions.npz"
        arrays = dict(np.load(path)) if path.is_file() else {}
        out = {}
        for factor in factors:
            # nucleus points: read the field a scanner at that magnification would show (real context);
            # images: zoom about the centre, mirroring the border outward when zooming out
            if points:
                transform = eval_transform(cfg["input_size"][-1], cfg["mean"], cfg["std"])
                crop_size = max(1, round(crop / factor))
            else:
                transform = eval_transform(cfg["input_size"][-1], cfg["mean"], cfg["std"], magnification=factor)
                crop_size = crop
            dataset = load_dataset(self.data, split, transform, classes=classes, crop_size=crop_size,
                                   seed=self.seed)
            loader = torch.utils.data.DataLoader(dataset, batch_size=2 * self.recipe["batch_size"],
                                                 num_workers=num_workers)
            probs, labels = predict_proba(model, loader, progress=False)
            metrics = compute_metrics(labels, probs, classes, n_bootstrap=0)
            out[_factor_key(factor)] = {k: metrics[k] for k in SCALARS}
            arrays["labels"], arrays["probs_" + _factor_key(factor)] = labels, probs.astype(np.float32)
        tmp = self.root / "predictions.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        return out


def load_predictions(cell_root: Path) -> dict[str, np.ndarray]:
    path = cell_root / "predictions.npz"
    return dict(np.load(path)) if path.is_file() else {}


@torch.no_grad()
def _inference_speed(checkpoint: Path, img_size: int, device: str) -> float:
    """Images per second of the model in eval mode on random input, batch ``SPEED_BATCH``, best of a few runs."""
    from ssmamba.models import create_model

    model = create_model(checkpoint=checkpoint).eval().to(device)
    images = torch.randn(SPEED_BATCH, 3, img_size, img_size, device=device)
    model(images)  # warm-up
    best = float("inf")
    for _ in range(SPEED_REPEATS):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return SPEED_BATCH / best


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
