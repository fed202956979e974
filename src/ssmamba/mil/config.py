"""The settings of ``ssmamba mil train`` and ``mil evaluate``: the bags both read (:class:`BagsConfig`, a group
of fields shared by the two), and what each does with them.

``head`` names a head architecture and ``head_args`` its constructor arguments (as ``model``/``model_args`` do
for image models); ``heads`` is a trained head folder (or CV run folder) to score with; ``group_column`` groups
bags (by patient) as it groups images in ``finetune``/``evaluate``; ``balance`` takes the values it takes there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmamba.train.config import Balancing, Precision

__all__ = ["MILTrainConfig", "BagsConfig", "MILTrainRunConfig", "MILEvaluateRunConfig"]


@dataclass
class MILTrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training bags.
        lr, weight_decay: AdamW settings; the learning rate follows a cosine decay to 0 after a 1-epoch warm-up.
        max_instances: training bags larger than this are randomly subsampled at every step (None: never).
        instance_dropout: share of a training bag's instances dropped at random at every step, an augmentation
            that keeps sequence heads from memorising fixed tile neighbourhoods (may drop the one decisive tile
            of a bag, so keep it low when a single tile decides).
        balance_classes: weight the loss by inverse class frequency of the training bags.
        standardise_features: standardise inputs with the mean/std of the training instances (stored in the head).
        select_on_validation: with a validation set, keep the weights of the epoch with the lowest validation
            loss (otherwise the last epoch's).
        chunk_size: instances per chunk in streaming inference.
        precision: ``bf16`` runs the training forward pass under bfloat16 autocast.
        accum_steps: bags whose gradients are averaged into each optimiser step (under torchrun, per process: a
            step then sees ``accum_steps x processes`` bags, as one process does with ``accum_steps x processes``).
        seed: controls the bag order, subsampling and instance dropout (initialisation is the caller's).
        device: torch device.
        threads: torch CPU threads for training and scoring; None leaves torch's setting.
    """

    epochs: int = 40
    lr: float = 2e-4
    weight_decay: float = 1e-4
    max_instances: int | None = 8192
    instance_dropout: float = 0.0
    balance_classes: bool = True
    standardise_features: bool = True
    select_on_validation: bool = True
    chunk_size: int = 4096
    precision: Precision = Precision.FP32
    accum_steps: int = 1
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        self.precision = Precision(self.precision)
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.accum_steps < 1:
            raise ValueError(f"--accum-steps must be >= 1, got {self.accum_steps}")
        if not 0.0 <= self.instance_dropout < 1.0:
            raise ValueError(f"instance dropout must be in [0, 1), got {self.instance_dropout}")


@dataclass
class BagsConfig:
    csv: str = field(metadata={"exists": "file"})  # bags CSV: slide_id,label[,split|fold][,patient_id]
    features: str = field(metadata={"exists": "dir"})  # folder of <slide>.h5 feature files (from `wsi extract`)
    id_column: str = "slide_id"  # CSV column naming each bag's feature file
    label_column: str = "label"  # CSV column of the bag labels
    group_column: str | None = None  # CSV column that groups bags (patient) [default: patient_id/case_id if present]
    allow_missing: bool = False  # leave out bags without a feature file (an error otherwise)

    def read(self, class_names: list[str] | None = None):
        """The :class:`~ssmamba.mil.bags.BagTable` these settings name."""
        from ssmamba.mil.bags import read_bag_table

        return read_bag_table(self.csv, self.features, id_column=self.id_column, label_column=self.label_column,
                              patient_column=self.group_column, class_names=class_names,
                              allow_missing=self.allow_missing)


@dataclass
class MILTrainRunConfig:
    bags: BagsConfig  # the bags (a group of options)
    out: str  # run folder: fold_*/ heads, cv_summary.json, summary.md/.html, config.yaml
    head: str = "abmil"  # a registered MIL head architecture: abmil, transmil and mamba_mil are built in
    head_args: dict[str, object] = field(default_factory=dict)  # head constructor arguments, e.g. hidden_dim=256
    # k-fold CV over all bags (stratified, by group if known); without it: the CSV's fold column, else its split
    # column (train/val/test)
    folds: int | None = None
    epochs: int = 40  # passes over the training bags
    lr: float = 2e-4  # AdamW learning rate (1-epoch warm-up, then cosine decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    max_instances: int = 8192  # subsample bigger training bags to this many instances (0: never)
    val_fraction: float = 0.0  # in CV, hold out this share of each fold's training bags to pick the best epoch
    balance: Balancing = Balancing.LOSS  # class balancing: none or loss (inverse-frequency loss weights)
    chunk_size: int = 4096  # instances per chunk at inference
    precision: Precision = Precision.FP32  # bf16: bfloat16 autocast in the training forward pass
    # bags per optimiser step (per process: under torchrun a step sees processes x this many bags)
    accum_steps: int = 1
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals (0 = none)
    seed: int = 0  # seed of the folds, bag order, subsampling and initialisation
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]

    def __post_init__(self):
        from ssmamba.mil.registry import head_names

        if self.head not in head_names():
            raise ValueError(f"--head {self.head!r} is not a MIL head; choose one of {', '.join(head_names())}")
        self.balance, self.precision = Balancing(self.balance), Precision(self.precision)
        if self.balance is Balancing.SAMPLER:
            raise ValueError("mil train --balance takes none or loss (a class-balanced sampler is not implemented "
                             "for bags)")
        self.train_config()  # its checks, before any bag is read

    def train_config(self) -> MILTrainConfig:
        return MILTrainConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                              max_instances=self.max_instances or None,
                              balance_classes=self.balance is Balancing.LOSS, chunk_size=self.chunk_size,
                              precision=self.precision, accum_steps=self.accum_steps, seed=self.seed,
                              device=self.device, threads=self.threads)


@dataclass
class MILEvaluateRunConfig:
    bags: BagsConfig  # the bags (a group of options)
    heads: str = field(metadata={"exists": "dir"})  # a trained head folder, or a CV run folder (its fold_* heads are averaged)
    out: str  # output folder: predictions.csv, metrics, report, config.yaml
    chunk_size: int = 4096  # instances per chunk at inference
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals (0 = none)
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
