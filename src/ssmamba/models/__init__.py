"""SSMamba backbones and the factory that builds, saves and loads them.

Importing this package registers the SSMamba variants with timm (``timm.create_model("ssmamba_tiny")``).
"""

from ssmamba.models.factory import (
    CheckpointMismatchError,
    create_model,
    list_models,
    load_config,
    save_pretrained,
)
from ssmamba.models.ssmamba import SSMamba, SSMambaConfig

__all__ = ["SSMamba", "SSMambaConfig", "create_model", "list_models", "load_config", "save_pretrained",
           "CheckpointMismatchError"]
