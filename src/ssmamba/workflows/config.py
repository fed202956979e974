"""The configs of the workflow commands (``evaluate``, ``predict``, ``probe``, ``demo``, ``benchmark``).

Plain dataclasses that import no torch, so that each command's ``--help`` and a usage error cost a fraction of a
second; the work is in :mod:`ssmamba.workflows.evaluate`, :mod:`.probe`, :mod:`.demo` and :mod:`.benchmark`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmamba.train.config import DEFAULT_MODEL, Balancing, FinetuneConfig, Precision, PretrainConfig

__all__ = ["EvaluateConfig", "PredictConfig", "ProbeConfig", "PipelineConfig", "BenchmarkConfig", "DEFAULT_ENTRIES"]


@dataclass
class EvaluateConfig:
    """``ssmamba evaluate``: ``checkpoint`` is the trained classifier under test (``finetune`` starts from
    ``init``); field metadata ``exists`` marks inputs that must exist, ``argument`` a positional argument."""

    checkpoint: str = field(metadata={"exists": "dir"})  # the classifier under test: a fine-tuned checkpoint folder (e.g. runs/finetune/best)
    data: str = field(metadata={"exists": "any"})  # labelled image folder, CSV manifest or nucleus-points CSV
    split: str = "test"  # which split to evaluate
    out: str = "runs/evaluate"  # report folder: metrics.json, report.md/.html, figures, config.yaml
    group_column: str | None = None  # CSV column that groups samples (patient, slide) when splits are made
    ordinal: bool = False  # labels are ordered grades: also report quadratic-weighted kappa
    bootstrap: int = 1000  # bootstrap resamples for 95% CIs (0 = none)
    batch_size: int = 128  # images per inference batch
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # seed of the split (if made) and of the bootstrap
    tta: bool = False  # average over the 8 rotations/flips of each image (8x slower inference)
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
    allow_leakage: bool = False  # accept the same image in more than one split (an error otherwise)


@dataclass
class PredictConfig:
    """``ssmamba predict``: class probabilities of ``inputs`` from the classifier ``checkpoint``."""

    checkpoint: str = field(metadata={"exists": "dir"})  # the classifier: a fine-tuned checkpoint folder
    inputs: str = field(metadata={"exists": "any", "argument": True})  # a folder, a CSV or a single image
    out: str = "predictions.csv"  # output CSV (unreadable inputs are listed in OUT.skipped.csv)
    batch_size: int = 128  # images per inference batch
    num_workers: int = 0  # DataLoader worker processes
    tta: bool = False  # average over the 8 rotations/flips of each image (8x slower inference)
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]


@dataclass
class ProbeConfig:
    """``ssmamba probe``: a feature extractor is ``encoder`` (+ ``weights`` for a named one), as in ``wsi extract``."""

    encoder: str  # the encoder: an ssmamba name, ssmamba/timm checkpoint folder, or timm model name
    data: str = field(metadata={"exists": "any"})  # labelled image folder, CSV manifest or nucleus-points CSV
    weights: str | None = field(default=None, metadata={"exists": "any"})  # weights for a named encoder (ssmamba checkpoint folder or timm weights file)
    img_size: int | None = None  # resize inputs to this side [default: the encoder's input size, else 224]
    crop_size: int = 32  # nucleus-points CSVs: side of the crop read around each point
    group_column: str | None = None  # CSV column that groups samples (patient, slide) when splits are made
    k: int = 20  # neighbours for kNN
    out: str = "runs/probe"  # report folder: probe.json, linear/ and knn/ reports, config.yaml
    batch_size: int = 128  # images per embedding batch
    seed: int = 0  # seed of the split (if made) and of the probes
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
    allow_leakage: bool = False  # accept the same image in more than one split (an error otherwise)


@dataclass
class PipelineConfig:
    data: str | None = None  # labelled folder/CSV; None = generate the synthetic demo data set
    out: str = "runs/demo"  # run folder: pretrain/, finetune/, report.md/.html, config.yaml
    model: str = DEFAULT_MODEL  # architecture: an ssmamba variant or a timm name
    img_size: int = 64  # image side in pixels (a multiple of 32)
    n_per_class: int = 240  # synthetic data set size per class
    pretrain_epochs: int = 4  # MAMIM pretraining epochs
    finetune_epochs: int = 6  # fine-tuning epochs
    batch_size: int = 48  # images per batch in both stages
    mask_patch_size: int = 16  # MAMIM mask patch side
    seed: int = 0  # seed of the data, split and training
    scratch_baseline: bool = False  # also fine-tune from random init with the same budget, for comparison
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]

    def __post_init__(self):
        # the stages' own checks, now, so a bad value fails before any data is generated or read
        PretrainConfig(model=self.model, img_size=self.img_size, crop_size=self.img_size, epochs=self.pretrain_epochs,
                       batch_size=self.batch_size, mask_patch_size=self.mask_patch_size)
        FinetuneConfig(model=self.model, img_size=self.img_size, crop_size=self.img_size, epochs=self.finetune_epochs,
                       batch_size=self.batch_size)
        if self.n_per_class < 1:
            raise ValueError(f"--n-per-class must be > 0, got {self.n_per_class}")


DEFAULT_ENTRIES = ("ssmamba", "ssmamba-mamim", "ssmamba-dms", "ssmamba-lpr", "resnet18", "convnext_atto",
                   "mambaout_femto")


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
