"""Whole-slide images: opening slides, tissue detection, tiling at a target µm/px, tile embedding, heatmaps.

The encoders and the feature-file layout live below this layer (:mod:`ssmamba.models.encoders`,
:mod:`ssmamba.io.features`) and are re-exported here.

Typical use (the same steps as ``ssmamba wsi tile`` / ``extract`` / ``heatmap``)::

    from ssmamba.wsi import TilingConfig, load_encoder, tile_slide, extract_from_patches
    tiled = tile_slide("slide.svs", TilingConfig(patch_size=224, target_mpp=0.5), "out/")
    encoder = load_encoder("ssmamba_tiny", checkpoint="runs/pretrain/checkpoint")
    extract_from_patches(tiled.patches_path, encoder, "out/")
"""

from ssmamba.io.features import FeatureKey, FeatureKeyMismatch, SlideFeatures, features_folder, load_features
from ssmamba.models.encoders import Encoder, InputSizeSource, encoder_from_module, load_encoder
from ssmamba.wsi.extract import extract_slide_features
from ssmamba.wsi.heatmap import (ColourBar, ScoreScaling, add_colour_bar, first_principal_component,
                                 render_heatmap)
from ssmamba.wsi.pipeline import extract_from_patches, find_patch_files, patches_folder, tile_slide
from ssmamba.wsi.slide import MissingMppError, Slide, SlideError, open_slide
from ssmamba.wsi.tiling import TileGrid, TilingConfig, draw_tiles, magnification_to_mpp, plan_tiles
from ssmamba.wsi.tissue import TissueMaskConfig, tissue_mask

__all__ = [
    "ColourBar", "Encoder", "FeatureKey", "FeatureKeyMismatch", "InputSizeSource", "MissingMppError", "ScoreScaling",
    "Slide", "SlideError", "SlideFeatures", "TileGrid", "TilingConfig", "TissueMaskConfig", "add_colour_bar",
    "draw_tiles", "encoder_from_module", "extract_from_patches", "extract_slide_features", "features_folder",
    "find_patch_files", "first_principal_component", "load_encoder", "load_features", "magnification_to_mpp",
    "open_slide", "patches_folder", "plan_tiles", "render_heatmap", "tile_slide", "tissue_mask",
]
