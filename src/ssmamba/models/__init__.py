"""SSMamba backbones, the factory that builds, saves and loads them, and the frozen-encoder interface.

``load_encoder(spec)`` resolves an ssmamba or timm name or checkpoint folder to an :class:`Encoder` (the model
with its normalisation, input size and weights hash), the one interface probing and feature extraction use.

Importing this package registers the SSMamba variants with timm (``timm.create_model("ssmamba_tiny_fast")``).
"""

from ssmamba.models.encoders import Encoder, InputSizeSource, encoder_from_module, load_encoder
from ssmamba.models.factory import (
    CheckpointMismatchError,
    create_model,
    list_models,
    load_config,
    save_pretrained,
)
from ssmamba.models.ssmamba import SSMamba, SSMambaConfig

__all__ = ["SSMamba", "SSMambaConfig", "create_model", "list_models", "load_config", "save_pretrained",
           "CheckpointMismatchError", "Encoder", "InputSizeSource", "encoder_from_module", "load_encoder"]
