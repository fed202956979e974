"""Parameters and multiply-accumulates of every registered variant at 224 px (the README's table).

GMACs count convolutions and linear layers (torch's FlopCounterMode); the selective scans add about
``directions x inner_dim x tokens x d_state x 3`` MACs per DMS scale, given separately.

    python benchmarks/model_stats.py
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssmamba import create_model, list_models
from ssmamba.models.dms import DirectionalMultiScaleMixer


def scan_macs(model: torch.nn.Module, size: int) -> float:
    """Analytic MACs of the recurrences themselves (state update + readout), summed over DMS mixers."""
    total, stride_of = 0.0, {}
    for i, stage in enumerate(model.stages):
        for module in stage.modules():
            stride_of[id(module)] = 4 * 2 ** i
    for module in model.modules():
        if isinstance(module, DirectionalMultiScaleMixer):
            side = -(-size // stride_of[id(module)])
            for scale, scan in zip(module.scales, module.scans):
                tokens = (-(-side // scale)) ** 2
                total += scan.D.numel() * tokens * scan.d_state * 3  # D has one entry per (direction, channel)
    return total


def main() -> None:
    print("| variant | params | GMACs at 224 px (conv + linear) | scan GMACs |")
    print("|---|---|---|---|")
    for name in list_models():
        model = create_model(name, num_classes=0).eval()
        params = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, 224, 224))
        print(f"| {name} | {params / 1e6:.2f} M | {counter.get_total_flops() / 2e9:.2f} | "
              f"{scan_macs(model, 224) / 1e9:.3f} |")


if __name__ == "__main__":
    main()
