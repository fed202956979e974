"""The settings of ``ssmamba wsi tile``, ``wsi extract`` and ``wsi heatmap``, one dataclass each, and the tiling,
tissue-mask and heatmap settings they are made of. Plain dataclasses that import no torch, numpy or image library,
so that each command's ``--help`` and a usage error cost a fraction of a second.

A feature extractor is ``encoder`` plus, for a named one, ``weights`` (as in ``ssmamba probe``); a trained MIL
head is ``heads`` (as in ``mil evaluate``); the side tiles are resized to for the model is ``img_size``.
Field metadata: ``argument`` marks a positional argument, ``exists`` an input path that must exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["TileRunConfig", "ExtractRunConfig", "HeatmapRunConfig", "TilingConfig", "TissueMaskConfig",
           "ScoreScaling", "magnification_to_mpp"]

# Magnification is a convenience alias: by convention a 20x objective scans at about 0.5 µm/px and 40x at 0.25.
MICRONS_AT_1X = 10.0


def magnification_to_mpp(magnification: float) -> float:
    """µm/px that a nominal objective magnification stands for (20x -> 0.5, 40x -> 0.25)."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return MICRONS_AT_1X / magnification


@dataclass(frozen=True)
class TissueMaskConfig:
    """Thresholds of :func:`tissue_mask` (saturation and value are in [0, 1]; sizes in thumbnail pixels).

    Attributes:
        saturation_threshold: fixed threshold; None means Otsu on this slide's saturation histogram.
        min_saturation: lower bound on the threshold, so empty glass (all low saturation) yields no tissue.
        max_value_dark: pixels darker than this value (HSV V) are ignored as pen marks or scanner black borders;
            0 disables the rule.
        blur_sigma: Gaussian smoothing of the saturation before thresholding, against JPEG speckle.
        closing_radius: closes gaps between nearby tissue fragments.
        min_object_area: connected tissue components smaller than this are dropped (dust, debris).
        max_hole_area: holes smaller than this are filled (lumens, nuclei-free gaps inside tissue).
    """

    saturation_threshold: float | None = None
    min_saturation: float = 0.05
    max_value_dark: float = 0.1
    blur_sigma: float = 1.0
    closing_radius: int = 2
    min_object_area: int = 64
    max_hole_area: int = 256


@dataclass(frozen=True)
class TilingConfig:
    """How to cut a slide into tiles.

    Attributes:
        patch_size: tile side in pixels at ``target_mpp``.
        target_mpp: µm per pixel of the tiles.
        stride: step between tiles in target pixels; None means ``patch_size`` (no overlap).
        min_tissue_fraction: a tile is kept when at least this share of its area is tissue in the mask.
        use_tissue_mask: False keeps every tile of the grid (plain crops, or images that are all tissue).
        thumbnail_max_side: side of the thumbnail the mask is computed on (and drawn on).
        tissue: thresholds of the tissue mask.
    """

    patch_size: int = 224
    target_mpp: float = 0.5
    stride: int | None = None
    min_tissue_fraction: float = 0.25
    use_tissue_mask: bool = True
    thumbnail_max_side: int = 2048
    tissue: TissueMaskConfig = field(default_factory=TissueMaskConfig)

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.target_mpp <= 0:
            raise ValueError(f"target_mpp must be positive, got {self.target_mpp}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ValueError(f"min_tissue_fraction must be in [0, 1], got {self.min_tissue_fraction}")

    @property
    def folder_name(self) -> str:
        """Folder tag shared by tiles and features, e.g. ``0.50mpp_224px``."""
        return f"{self.target_mpp:.2f}mpp_{self.patch_size}px"


class ScoreScaling(enum.Enum):
    """How raw scores become colours.

    PERCENTILE maps each score to its percentile among the slide's tiles (CLAM's default): attention logits are
    heavy-tailed, and on a linear scale a handful of tiles would take all the colour. RAW is linear between the
    slide's lowest and highest score, and its colour bar is in the score's own units. ``rank`` and ``minmax``
    are the older names of the two.
    """

    PERCENTILE = "percentile"
    RAW = "raw"

    @classmethod
    def _missing_(cls, value):
        return {"rank": cls.PERCENTILE, "minmax": cls.RAW}.get(value)


@dataclass
class TileRunConfig:
    inputs: tuple[str, ...] = field(metadata={"argument": True, "exists": "any"})  # slide files or folders
    out: str  # output folder: patches_<mpp>mpp_<size>px/ with <slide>.h5 and <slide>.png
    patch_size: int = 224  # tile side in pixels at the target resolution
    mpp: float | None = None  # target µm per pixel of the tiles [default: 0.5]
    magnification: float | None = None  # alternative to --mpp: 20 means 0.5 µm/px, 40 means 0.25 µm/px
    stride: int | None = None  # step between tiles in target pixels [default: patch size, no overlap]
    slide_mpp: float | None = None  # µm/px of level 0, overriding the slide metadata (needed when absent)
    min_tissue: float = 0.25  # keep tiles with at least this tissue fraction
    tissue_mask: bool = True  # --no-tissue-mask keeps every tile (images that are all tissue)
    saturation_threshold: float | None = None  # fixed tissue threshold on HSV saturation [default: Otsu]
    min_saturation: float = 0.05  # lower bound of the Otsu threshold
    thumbnail_size: int = 2048  # longest side of the mask/thumbnail
    skip_errors: bool = False  # log failing slides to errors.log and go on

    def __post_init__(self):
        if self.mpp is not None and self.magnification is not None:
            raise ValueError("give --mpp or --magnification, not both")

    @property
    def target_mpp(self) -> float:
        if self.magnification is not None:
            return magnification_to_mpp(self.magnification)
        return 0.5 if self.mpp is None else self.mpp

    def tiling(self) -> TilingConfig:
        return TilingConfig(patch_size=self.patch_size, target_mpp=self.target_mpp, stride=self.stride,
                            min_tissue_fraction=self.min_tissue, use_tissue_mask=self.tissue_mask,
                            thumbnail_max_side=self.thumbnail_size,
                            tissue=TissueMaskConfig(saturation_threshold=self.saturation_threshold,
                                                    min_saturation=self.min_saturation))


@dataclass
class ExtractRunConfig:
    inputs: tuple[str, ...] = field(metadata={"argument": True, "exists": "any"})  # patches .h5 files or `wsi tile` output folders
    encoder: str  # the encoder: an ssmamba name, timm name, or checkpoint folder
    weights: str | None = field(default=None, metadata={"exists": "any"})  # weights for a named encoder (ssmamba checkpoint folder or timm weights file)
    pretrained: bool = False  # let timm download the named model's weights (needs network)
    # the side tiles are resized to before embedding [default: the tile size for encoders that take any size
    # (ssmamba, CNNs); the model's size for fixed-size ones (ViTs)]
    img_size: int | None = None
    out: str | None = None  # output folder [default: the folder holding patches_*/]
    batch_size: int = 64  # tiles per embedding batch
    num_workers: int = 0  # tile-reading worker processes
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...
    threads: int | None = None  # CPU threads torch uses [default: torch's, i.e. OMP_NUM_THREADS or the cores]
    slide_dir: str | None = field(default=None, metadata={"exists": "dir"})  # where the slides are now, if they moved since tiling
    skip_errors: bool = False  # log failing slides to errors.log and go on


@dataclass
class HeatmapRunConfig:
    slide: str = field(metadata={"argument": True, "exists": "file"})  # the slide file
    features: str = field(metadata={"exists": "any"})  # the slide's features .h5 (from `wsi extract`)
    out: str  # output PNG (a CSV of x,y,score is written next to it)
    heads: str | None = field(default=None, metadata={"exists": "dir"})  # a trained MIL head folder (e.g. runs/mil/fold_0) whose attention is drawn
    scores: str | None = field(default=None, metadata={"exists": "file"})  # instead of --heads: a .npy of one score per tile, in the features file's order
    # instead of --heads: colour tiles by the first principal component of their features, a label-free view for
    # slides without a trained head
    pca: bool = False
    slide_mpp: float | None = None  # µm/px of level 0, if the slide has none in its metadata
    thumbnail_size: int = 2048  # longest side of the thumbnail drawn on
    alpha: float = 0.5  # opacity of the colours over tissue
    colormap: str = "jet"  # a matplotlib colormap name
    # percentile: colour by rank among the slide's tiles (CLAM's default); raw: linear in the score, colour bar in
    # its units
    scaling: ScoreScaling = ScoreScaling.PERCENTILE
    # Gaussian smoothing of the score map, sigma in tiles (0: sharp tiles); tiles cut with overlap
    # (`wsi tile --stride`) are averaged as well
    smooth: float = 0.5
    colour_bar: bool = True  # add a colour bar that says what the colours mean
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ...

    def __post_init__(self):
        self.scaling = ScoreScaling(self.scaling)
        if sum((self.heads is not None, self.scores is not None, self.pca)) != 1:
            raise ValueError("give exactly one of --heads (a trained MIL head), --scores (a .npy) or --pca "
                             "(label-free: first principal component of the features)")
