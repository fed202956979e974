"""Self-supervised pretraining: MAMIM (Mamba masked image modelling)."""

from ssmamba.ssl.mamim import MAMIM, MaskGenerator, PixelDecoder

__all__ = ["MAMIM", "MaskGenerator", "PixelDecoder"]
