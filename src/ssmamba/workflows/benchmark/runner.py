"""Run a benchmark: the grid of (entry, seed) cells with one shared recipe, then the leaderboard.

Several processes (or jobs on a cluster with a shared file system) can work on one ``--out`` at once: each claims
a cell with a lock file before computing it and skips cells that others hold or have finished.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ssmamba.workflows.config import DEFAULT_ENTRIES, BenchmarkConfig
from ssmamba.train.setup import file_log
from ssmamba.workflows.benchmark.cells import Cell, CellBusy
from ssmamba.workflows.benchmark.entries import parse_entry

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "run_benchmark", "DEFAULT_ENTRIES"]

# BenchmarkConfig fields that do not change what a cell computes (so they may differ between sittings)
# (backbone_args is part of each ssmamba entry's recorded architecture instead, entry_lr of its cells' recipe)
_NOT_RECIPE = {"data", "out", "entries", "seeds", "magnifications", "bootstrap", "device", "threads", "num_workers",
               "backbone_args", "entry_lr"}


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
