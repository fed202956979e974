"""The training commands' configs (``ssmamba pretrain`` / ``ssmamba finetune``), their enums and the default model.

Plain dataclasses that import no torch, so that ``ssmamba finetune --help`` and a config check cost a fraction of a
second; the training code that runs them is in :mod:`ssmamba.train.pretrain` and :mod:`ssmamba.train.finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ssmamba.train.checks import require_fraction, require_positive

__all__ = ["DEFAULT_MODEL", "Precision", "Balancing", "MONITOR_METRICS", "FinetuneConfig", "PretrainConfig"]

# The variant the training commands, the demo and the benchmark presets build unless told otherwise (an ssmamba name
# registered in ssmamba.models). ssmamba_tiny_fast, not ssmamba_tiny: level with it on validation (two data sets)
# and on the test splits of all three leaderboards, at about 30% less training CPU time and ResNet-18's fp32
# training speed (docs/results.md, "Issue 16").
DEFAULT_MODEL = "ssmamba_tiny_fast"


class Precision(str, Enum):
    """Arithmetic of the training forward pass. ``bf16`` runs it under bfloat16 autocast (convolutions and matrix
    products in bfloat16; weights, optimiser state, the selective scan and the loss stay float32): about 1.25x more
    images/s on a CPU with AVX512-BF16 (benchmarks/results/precision.md), more on GPUs; several times slower on a
    CPU without bfloat16 hardware (AVX2 only), where the Trainer warns."""

    FP32 = "fp32"
    BF16 = "bf16"


# Validation metrics that --monitor can name (scalars of compute_metrics; larger is better).
MONITOR_METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "auroc", "kappa")


class Balancing(str, Enum):
    """How class imbalance is handled: not at all, a class-balanced sampler, or inverse-frequency loss weights."""

    NONE = "none"
    SAMPLER = "sampler"
    LOSS = "loss"


@dataclass
class FinetuneConfig:
    data: str = ""  # image folder, CSV manifest or nucleus-points CSV with labels (and splits or groups)
    out: str = "runs/finetune"  # run folder: best/, last/, config.yaml, curves, log
    # architecture when starting from scratch: an ssmamba variant or any timm name (resnet18, convnext_atto, ...)
    model: str = DEFAULT_MODEL
    model_args: dict[str, object] = field(default_factory=dict)  # architecture overrides, e.g. lpr=false
    init: str | None = None  # the weights to start from: a checkpoint folder (MAMIM, or any ssmamba/timm checkpoint)
    img_size: int = 64  # model input side in pixels
    crop_size: int = 64  # nucleus-points CSVs: side of the crop read around each point
    group_column: str | None = None  # CSV column to split by (patient, slide) when the data has no split column
    # Field of view: evaluation shows each image whole at img_size (zoom = img_size / the training images' median
    # short side, saved in the checkpoint); training views are drawn at these zooms *relative to that one*, log-
    # uniformly, so their mean scale is the evaluation scale (zooms below it mirror the image border outward).
    zoom_min: float = 0.8  # smallest zoom of training views, relative to the evaluation view
    zoom_max: float = 1.25  # largest zoom of training views, relative to the evaluation view
    hed: bool = True  # stain (HED) jitter
    flips: bool = True  # random horizontal/vertical flips
    rot90: bool = True  # random 90-degree rotations
    epochs: int = 20  # passes over the training data
    batch_size: int = 64  # images per batch (per process under torchrun)
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine decay)
    weight_decay: float = 0.05  # AdamW weight decay (not on norms, biases and SSM dynamics)
    # layer-wise LR decay for pretrained encoders (1.0 = off). Off by default: after a short MAMIM pretraining,
    # 0.75 / 0.9 / 1.0 gave test weighted F1 0.62 / 0.65 / 0.71 on crchp with 1,500 labels (docs/results.md)
    layer_decay: float = 1.0
    warmup_epochs: float = 1.0  # linear learning-rate warm-up, in epochs
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    drop_path: float = 0.1  # stochastic depth rate
    ema: bool = False  # keep an exponential moving average of the weights
    ema_decay: float = 0.999  # decay of the weight average per step
    balance: Balancing = Balancing.NONE  # class balancing: none, sampler (class-balanced batches) or loss (weights)
    monitor: str = "balanced_accuracy"  # validation metric for early stopping and the best checkpoint
    patience: int = 5  # epochs without improvement before stopping (0 = never stop early)
    grad_clip: float = 3.0  # clip the gradient norm to this (0 = no clipping)
    accum_steps: int = 1  # batches summed into each optimiser step (a step sees batch-size x this x processes)
    sync_batch_norm: bool = False  # under torchrun on GPUs: BatchNorm statistics over every process's batch
    max_train: int | None = None  # subsample training samples (seeded), e.g. for a budget experiment
    max_val: int | None = None  # validate on this many samples (the same random subset for every seed and model)
    precision: Precision = Precision.FP32  # bf16: bfloat16 autocast in the training forward pass
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # seed of the split (if made), data order and initialisation
    strict: bool = False  # fail on an unreadable file instead of skipping it
    allow_leakage: bool = False  # accept the same image in more than one split (an error otherwise)

    def __post_init__(self):
        self.balance = Balancing(self.balance)
        self.precision = Precision(self.precision)
        require_positive(self, "img_size", "crop_size", "zoom_min", "zoom_max", "epochs", "batch_size",
                         "accum_steps", "max_train", "ema_decay")
        if self.zoom_min > self.zoom_max:
            raise ValueError(f"--zoom-min {self.zoom_min} is larger than --zoom-max {self.zoom_max}")
        if self.monitor not in MONITOR_METRICS:
            raise ValueError(f"--monitor {self.monitor!r} is not a validation metric; choose one of "
                             f"{', '.join(MONITOR_METRICS)}")


@dataclass
class PretrainConfig:
    data: str = ""  # image folder, CSV manifest or nucleus-points CSV; labels are ignored
    out: str = "runs/pretrain"  # run folder: checkpoint/, config.yaml, loss curves, log
    model: str = DEFAULT_MODEL  # architecture: an ssmamba variant (ssmamba_tiny_fast, ssmamba_tiny, ...)
    model_args: dict[str, object] = field(default_factory=dict)  # architecture overrides, e.g. lpr=false
    split: str | None = None  # e.g. "train" to keep val/test images out of pretraining; None = every image
    img_size: int = 64  # training view size (a multiple of 32)
    crop_size: int = 64  # nucleus-points CSVs: side of the crop read around each point, before the view
    mask_ratio: float = 0.6  # share of mask patches hidden from the encoder
    mask_patch_size: int = 16  # side of a mask patch in pixels
    decoder_levels: int = 2  # stage maps the pixel decoder reads, coarsest first (1 = the stride-32 map only)
    zoom_min: float = 0.25  # views span this range of zoom relative to native resolution (magnification shift)
    zoom_max: float = 1.0  # largest zoom of the views, relative to native resolution
    hed: bool = True  # stain (HED) jitter
    flips: bool = True  # random horizontal/vertical flips
    rot90: bool = True  # random 90-degree rotations
    epochs: int = 10  # passes over the data
    batch_size: int = 32  # images per batch (per process under torchrun)
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine decay)
    weight_decay: float = 0.05  # AdamW weight decay (not on norms, biases and SSM dynamics)
    warmup_epochs: float = 1.0  # linear learning-rate warm-up, in epochs
    grad_clip: float = 3.0  # clip the gradient norm to this (0 = no clipping)
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    accum_steps: int = 1  # batches summed into each optimiser step (a step sees batch-size x this x processes)
    sync_batch_norm: bool = False  # under torchrun on GPUs: BatchNorm statistics over every process's batch
    max_images: int | None = None  # subsample the data set (seeded) for a quick run
    precision: Precision = Precision.FP32  # bf16: bfloat16 autocast in the training forward pass
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # seed of the data order, masks and initialisation
    strict: bool = False  # fail on an unreadable file instead of skipping it
    allow_leakage: bool = False  # accept the same image in more than one split (an error otherwise)

    def __post_init__(self):
        self.precision = Precision(self.precision)
        require_positive(self, "img_size", "crop_size", "mask_patch_size", "decoder_levels", "zoom_min", "zoom_max",
                         "epochs", "batch_size", "accum_steps", "max_images")
        require_fraction(self, "mask_ratio")
        if self.zoom_min > self.zoom_max:
            raise ValueError(f"--zoom-min {self.zoom_min} is larger than --zoom-max {self.zoom_max}")
        if self.img_size % 32 or self.img_size % self.mask_patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of 32 and of mask_patch_size "
                             f"{self.mask_patch_size}")
