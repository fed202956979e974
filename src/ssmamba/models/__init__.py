"""SSMamba backbones and the factory that builds, saves and loads them."""

from ssmamba.models.factory import (
    CheckpointMismatchError,
    create_model,
    list_models,
    load_config,
    register_with_timm,
    save_pretrained,
)
from ssmamba.models.ssmamba import SSMamba, SSMambaConfig

__all__ = ["SSMamba", "SSMambaConfig", "create_model", "list_models", "load_config", "save_pretrained",
           "register_with_timm", "CheckpointMismatchError"]
