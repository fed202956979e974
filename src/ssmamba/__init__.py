"""SSMamba: a self-supervised hybrid state-space model for pathology image classification.

``import ssmamba`` gives ``ssmamba.create_model`` and, when timm is installed, registers the SSMamba variants with
``timm.create_model``.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while they wait steal the cores that other processes (or a DataLoader) need; on a busy
# 2-core machine that made training 5-10x slower (benchmarks/results/scan.md). Passive waiting costs little when
# the machine is idle. Only takes effect if torch is not imported yet (the CLI); a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ssmamba.models import create_model, list_models, load_config, register_with_timm, save_pretrained  # noqa: E402

register_with_timm()

__all__ = ["__version__", "create_model", "list_models", "load_config", "save_pretrained"]
