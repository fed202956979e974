"""SSMamba: a self-supervised hybrid state-space model for pathology image classification.

``import ssmamba`` gives ``ssmamba.create_model`` and, when timm is installed, registers the SSMamba variants with
``timm.create_model``.
"""

__version__ = "0.1.0"

from ssmamba.models import create_model, list_models, load_config, register_with_timm, save_pretrained  # noqa: E402

register_with_timm()

__all__ = ["__version__", "create_model", "list_models", "load_config", "save_pretrained"]
