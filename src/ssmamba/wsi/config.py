"""The settings of ``ssmamba wsi tile``, ``wsi extract`` and ``wsi heatmap``, one dataclass each.

A feature extractor is ``encoder`` plus, for a named one, ``weights`` (as in ``ssmamba probe``); a trained MIL
head is ``heads`` (as in ``mil evaluate``); the side tiles are resized to for the model is ``img_size``.
Field metadata: ``argument`` marks a positional argument, ``exists`` an input path that must exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmamba.wsi.heatmap import ScoreScaling
from ssmamba.wsi.tiling import TilingConfig, magnification_to_mpp
from ssmamba.wsi.tissue import TissueMaskConfig

__all__ = ["TileRunConfig", "ExtractRunConfig", "HeatmapRunConfig"]


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
