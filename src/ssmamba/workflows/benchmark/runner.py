"""Run a benchmark: the grid of (entry, seed) cells with one shared recipe, then the leaderboard.

Several processes (or jobs on a cluster with a shared file system) can work on one ``--out`` at once: each claims
a cell with a lock file before computing it and skips cells that others hold or have finished.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ssmamba.train.config import DEFAULT_MODEL, Balancing, Precision
from ssmamba.train.setup import file_log
from ssmamba.workflows.benchmark.cells import Cell, CellBusy
from ssmamba.workflows.benchmark.entries import Entry, parse_entry

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "run_benchmark", "DEFAULT_ENTRIES"]

DEFAULT_ENTRIES = ("ssmamba", "ssmamba-mamim", "ssmamba-dms", "ssmamba-lpr", "resnet18", "convnext_atto",
                   "mambaout_femto")
# BenchmarkConfig fields that do not change what a cell computes (so they may differ between sittings)
# (backbone_args is part of each ssmamba entry's recorded architecture instead, entry_lr of its cells' recipe)
_NOT_RECIPE = {"data", "out", "entries", "seeds", "magnifications", "bootstrap", "device", "threads", "num_workers",
               "backbone_args", "entry_lr"}


@dataclass
class BenchmarkConfig:
    data: str = ""  # labelled data set with train/val/test splits (folder, CSV manifest, nucleus points, ...)
    out: str = "runs/benchmark"  # benchmark folder: cells/, leaderboard.{md,json,png}, benchmark.log, commands.txt
    entries: tuple[str, ...] = DEFAULT_ENTRIES  # presets (ssmamba, ssmamba-mamim, ssmamba-dms, ssmamba-lpr, plain-mamba), ssmamba or timm models, MODEL+mamim
    seeds: tuple[int, ...] = (0, 1, 2)  # one cell per entry and seed
    backbone: str = DEFAULT_MODEL  # the SSMamba variant the presets are built on
    backbone_args: dict[str, object] = field(default_factory=dict)  # architecture arguments of every ssmamba entry (conv_block=inverted)
    img_size: int = 64  # model input side; a multiple of 32 for entries with a MAMIM stage
    crop_size: int = 64  # nucleus-points data: side of the crop read around each point
    epochs: int = 10  # THE budget: fine-tuning epochs, the same for every entry
    pretrain_epochs: int = 5  # MAMIM epochs of entries with a MAMIM stage (its cost is reported separately)
    batch_size: int = 64  # training batch size of every entry (evaluation uses twice this)
    lr: float = 1e-3  # AdamW peak learning rate (1 warm-up epoch, then cosine) of every entry not in --entry-lr
    entry_lr: dict[str, float] = field(default_factory=dict)  # NAME=LR: an entry's own peak learning rate (choose it on validation, e.g. with benchmarks/sweep.py)
    weight_decay: float = 0.05  # AdamW weight decay (not on norms, biases and SSM dynamics)
    drop_path: float = 0.1  # stochastic depth rate of every entry that has residual blocks
    # as in `ssmamba finetune`: the absolute zoom is these times input size / the training images' median short side
    zoom_min: float = 0.8  # smallest zoom of training views relative to the evaluation view (1 = its field of view)
    zoom_max: float = 1.25  # largest zoom of training views relative to the evaluation view
    monitor: str = "balanced_accuracy"  # validation metric that picks each run's checkpoint; the leaderboard's first
    balance: Balancing = Balancing.NONE  # class balancing: none, sampler or loss
    max_train: int | None = None  # subsample the training split (seeded per seed; the same subset for every entry)
    max_val: int | None = None  # select checkpoints on this many validation samples (one subset for all cells)
    mask_patch_size: int = 16  # MAMIM mask patch side
    pretrain_max_images: int | None = None  # MAMIM on at most this many training images (seeded); None = all
    magnifications: tuple[float, ...] = (0.5, 2.0)  # test also at these magnifications (0.5 = half, 2 = twice)
    bootstrap: int = 1000  # test-set resamples for the leaderboard's 95% CIs
    precision: Precision = Precision.FP32  # bf16: bfloat16 autocast in training (every entry alike)
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # torch CPU threads of this process (default: torch's choice)
    num_workers: int = 0  # DataLoader workers

    def __post_init__(self):
        self.entries = _split_items(self.entries)
        self.seeds = tuple(int(s) for s in _split_items(self.seeds))
        self.magnifications = tuple(float(m) for m in _split_items(self.magnifications))
        self.balance, self.precision = Balancing(self.balance), Precision(self.precision)
        if not self.entries or not self.seeds:
            raise ValueError("a benchmark needs at least one entry and one seed")
        if len(set(self.entries)) != len(self.entries) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"entries and seeds must be distinct: {self.entries}, {self.seeds}")
        if any(m <= 0 for m in self.magnifications):
            raise ValueError(f"magnification factors must be > 0, got {self.magnifications}")
        if self.epochs < 1 or not 0 < self.zoom_min <= self.zoom_max:
            raise ValueError("need epochs >= 1 and 0 < zoom_min <= zoom_max")
        self.entry_lr = {self._entry_named(name): float(lr) for name, lr in self.entry_lr.items()}
        if any(not lr > 0 for lr in self.entry_lr.values()):
            raise ValueError(f"--entry-lr: learning rates must be > 0, got {self.entry_lr}")

    def _entry_named(self, name: str) -> str:
        """The entry ``name`` refers to (``ssmamba_mamim`` for ``ssmamba-mamim`` too: option keys read ``-`` as
        ``_``)."""
        for entry in self.entries:
            if name in (entry, entry.replace("-", "_")):
                return entry
        raise ValueError(f"--entry-lr {name}=...: {name!r} is not one of the entries ({', '.join(self.entries)})")

    def lr_of(self, entry: str) -> float:
        """The peak learning rate ``entry`` trains with."""
        return self.entry_lr.get(entry, self.lr)

    def cell_recipe(self, recipe: dict, entry: str) -> dict:
        """The shared ``recipe`` as ``entry``'s cells train with it (their own learning rate)."""
        return {**recipe, "lr": self.lr_of(entry)}


def _split_items(values) -> tuple:
    """``("a,b", "c")`` -> ``("a", "b", "c")``: list options take commas as well as repetition."""
    items = []
    for value in values:
        items += [v.strip() for v in str(value).split(",") if v.strip()] if isinstance(value, str) else [value]
    return tuple(items)


def resolve_recipe(cfg: BenchmarkConfig) -> tuple[dict, dict]:
    """The shared recipe (what every cell trains with, including the absolute training zoom) and facts about the
    data set (classes, split sizes, native image side). Reads every split once, so bad data fails before work."""
    from ssmamba.data import load_dataset
    from ssmamba.data.load import SourceKind, detect_kind
    from ssmamba.data.transforms import FieldOfView

    options = dict(crop_size=cfg.crop_size, seed=0)
    train = load_dataset(cfg.data, "train", None, **options)
    classes = list(train.classes)
    sizes = {split: len(load_dataset(cfg.data, split, None, classes=classes, **options)) for split in ("val", "test")}
    points = detect_kind(Path(cfg.data)) is SourceKind.POINTS
    view = FieldOfView.of(train, cfg.img_size, (cfg.zoom_min, cfg.zoom_max))  # what fine-tuning will use
    recipe = {k: v for k, v in asdict(cfg).items() if k not in _NOT_RECIPE}
    recipe.update(balance=cfg.balance.value, precision=cfg.precision.value,
                  train_zoom=[round(z, 4) for z in view.train_zoom])
    facts = {"classes": classes, "n_train": len(train), **{f"n_{k}": v for k, v in sizes.items()},
             "native_side": view.native_side, "eval_zoom": round(view.eval_zoom, 4),
             "kind": "points" if points else "images"}
    return recipe, facts


def run_benchmark(cfg: BenchmarkConfig, progress: bool = True, command: str | None = None,
                  report_only: bool = False) -> Path:
    """Compute every missing cell and write the leaderboard; returns the path of ``leaderboard.md``.

    ``command``: the command line that started the run, recorded in ``commands.txt`` (the CLI passes it).
    ``report_only``: compute nothing; write the leaderboard of the cells that have finished."""
    from ssmamba.train.setup import resolve_device
    from ssmamba.workflows.benchmark.leaderboard import build_leaderboard, write_leaderboard

    entries = [parse_entry(name, cfg.backbone, cfg.backbone_args) for name in cfg.entries]  # unknown entries fail before any work
    if any(e.mamim for e in entries) and (cfg.img_size % 32 or cfg.img_size % cfg.mask_patch_size):
        raise ValueError(f"--img-size {cfg.img_size} must be a multiple of 32 and of --mask-patch-size "
                         f"{cfg.mask_patch_size} for entries with a MAMIM stage")
    device = str(resolve_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with file_log(out / "benchmark.log"):
        recipe, facts = resolve_recipe(cfg)
        cells = [Cell(out / "cells" / entry.name / f"seed_{seed}", entry, seed, cfg.data,
                      cfg.cell_recipe(recipe, entry.name)) for seed in cfg.seeds for entry in entries]

        def publish() -> Path:  # after every cell, so a long benchmark can be read (and committed) as it goes
            return write_leaderboard(build_leaderboard(out, entries, cfg, recipe, facts), out)["md"]

        if report_only:
            for cell in cells:
                if cell.result() is not None:
                    cell.check_key()
        else:
            _record_invocation(out, cfg, recipe, facts, command)
            _run_cells(cells, cfg, device, progress, publish)
        return publish()


def _run_cells(cells: list[Cell], cfg: BenchmarkConfig, device: str, progress: bool, publish) -> None:
    done = [c for c in cells if c.is_done(cfg.magnifications)]
    for cell in done:
        cell.check_key()  # a finished cell from another recipe is an error, not a silent reuse
    logger.info("benchmark: %d cells (%d entries x %d seeds), %d finished already and reused", len(cells),
                len(cfg.entries), len(cfg.seeds), len(done))
    todo = [c for c in cells if c not in done]
    bar = tqdm(total=len(cells), initial=len(done), unit="cell", desc="benchmark", disable=not progress,
               dynamic_ncols=True)
    busy, timings = [], []
    for cell in todo:
        try:
            cell.acquire()
        except CellBusy as error:
            logger.info("skipping: %s", error)
            busy.append(cell)
            continue
        if cell.is_done(cfg.magnifications):  # another process finished it since this one started
            cell.release()
            busy.append(cell)
            continue
        try:
            started = time.perf_counter()
            result = cell.run(cfg.magnifications, device, cfg.num_workers)
            timings.append(time.perf_counter() - started)
        finally:
            cell.release()
        bar.update(1)
        finished = len(done) + len(timings)
        remaining = len(todo) - len(timings) - len(busy)
        eta = np.mean(timings) * remaining / 60
        native = result["test"]["x1"]
        logger.info("cell %d/%d done: %s seed %d, test %s %.4f, %.1f CPU-min; about %.0f min left",
                    finished, len(cells), cell.entry.name, cell.seed, cfg.monitor, native[cfg.monitor],
                    sum(result["cpu_s"].values()) / 60, eta)
        bar.set_postfix(last=f"{cell.entry.name}/s{cell.seed}", eta_min=f"{eta:.0f}")
        publish()
    bar.close()
    if busy:
        logger.info("%d cell(s) were computed by other processes sharing %s", len(busy), cfg.out)


def _record_invocation(out: Path, cfg: BenchmarkConfig, recipe: dict, facts: dict, command: str | None) -> None:
    """``benchmark.yaml`` (this configuration) and one line per invocation in ``commands.txt``."""
    config = {**asdict(cfg), "balance": cfg.balance.value, "precision": cfg.precision.value,
              "entries": list(cfg.entries), "seeds": list(cfg.seeds), "magnifications": list(cfg.magnifications)}
    (out / "benchmark.yaml").write_text(yaml.safe_dump({"benchmark": config, "recipe": recipe, "data": facts},
                                                       sort_keys=False))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with open(out / "commands.txt", "a") as handle:
        handle.write(f"# {stamp}, load average {load}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads\n")
        handle.write((command or "(run from Python: ssmamba.workflows.benchmark.run_benchmark)") + "\n")
