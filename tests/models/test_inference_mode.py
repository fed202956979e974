"""Index tensors that the model caches are built outside inference mode, so a forward pass under
``torch.inference_mode`` (as ``wsi extract`` runs it) never breaks a later training step in the same process."""

from __future__ import annotations

import torch

from ssmamba.models import create_model
from ssmamba.models.dms import _nearest_tokens
from ssmamba.ops.directional import _direction_orders_cpu, _scan_order_cpu


def test_training_after_an_inference_mode_forward_pass():
    for cache in (_nearest_tokens, _scan_order_cpu, _direction_orders_cpu):
        cache.cache_clear()  # so that the inference-mode pass below is the one that fills them
    torch.manual_seed(0)
    model = create_model("ssmamba_test", num_classes=2, directions=("row", "column", "diagonal"))
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 64, 64))
    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
