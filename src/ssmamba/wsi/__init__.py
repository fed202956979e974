"""Whole-slide images: opening slides, tissue detection, tiling at a target µm/px, tile embedding, heatmaps.

The encoders and the feature-file layout live below this layer (:mod:`ssmamba.models.encoders`,
:mod:`ssmamba.io.features`) and are re-exported here.

Typical use (the same steps as ``ssmamba wsi tile`` / ``extract`` / ``heatmap``)::

    from ssmamba.wsi import TilingConfig, load_encoder, tile_slide, extract_from_patches
    tiled = tile_slide("slide.svs", TilingConfig(patch_size=224, target_mpp=0.5), "out/")
    encoder = load_encoder("ssmamba_tiny", checkpoint="runs/pretrain/checkpoint")
    extract_from_patches(tiled.patches_path, encoder, "out/")
"""

import importlib

# public name -> module that defines it, imported on first use (PEP 562): `ssmamba wsi tile --help` reads only
# ssmamba.wsi.config, and importing the package costs nothing until a name is used
_EXPORTS = {
    **dict.fromkeys(("FeatureKey", "FeatureKeyMismatch", "SlideFeatures", "features_folder", "load_features"),
                    "ssmamba.io.features"),
    **dict.fromkeys(("Encoder", "InputSizeSource", "encoder_from_module", "load_encoder"), "ssmamba.models.encoders"),
    "extract_slide_features": "ssmamba.wsi.extract",
    **dict.fromkeys(("ColourBar", "add_colour_bar", "first_principal_component", "render_heatmap"),
                    "ssmamba.wsi.heatmap"),
    **dict.fromkeys(("extract_from_patches", "find_patch_files", "patches_folder", "tile_slide"),
                    "ssmamba.wsi.pipeline"),
    **dict.fromkeys(("MissingMppError", "Slide", "SlideError", "open_slide"), "ssmamba.wsi.slide"),
    **dict.fromkeys(("TileGrid", "draw_tiles", "plan_tiles"), "ssmamba.wsi.tiling"),
    **dict.fromkeys(("ScoreScaling", "TilingConfig", "TissueMaskConfig", "magnification_to_mpp"), "ssmamba.wsi.config"),
    "tissue_mask": "ssmamba.wsi.tissue",
}

__all__ = [
    "ColourBar", "Encoder", "FeatureKey", "FeatureKeyMismatch", "InputSizeSource", "MissingMppError", "ScoreScaling",
    "Slide", "SlideError", "SlideFeatures", "TileGrid", "TilingConfig", "TissueMaskConfig", "add_colour_bar",
    "draw_tiles", "encoder_from_module", "extract_from_patches", "extract_slide_features", "features_folder",
    "find_patch_files", "first_principal_component", "load_encoder", "load_features", "magnification_to_mpp",
    "open_slide", "patches_folder", "plan_tiles", "render_heatmap", "tile_slide", "tissue_mask",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
