"""Selective scan (Mamba's S6 recurrence) with interchangeable backends.

    y = selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, backend="auto")

    out = directional_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False,
                           directions=("row", "column"), height=H, width=W, backend="auto")

The second runs K scans of a token grid, each reading the grid in its own direction's order, and sums them (DMS);
its CPU kernel reads the grid in place. Backends: ``ref`` (readable PyTorch loop, the ground truth), ``cpu`` (fused
C++ kernel, compiled on first use), ``cuda`` (mamba_ssm when installed, else Triton kernels, else the reference
loop). Importing this package compiles nothing.
"""

from ssmamba.ops.contract import ScanShape, check_scan_inputs
from ssmamba.ops.directional import ScanDirection, direction_orders, directional_scan_ref, scan_order
from ssmamba.ops.dispatch import (
    BACKEND_ENV,
    Backend,
    backend_report,
    choose_backend,
    directional_scan,
    selective_scan,
)
from ssmamba.ops.fallback import ScanFallbackWarning, warn_once
from ssmamba.ops.scan_cpu import NO_BUILD_ENV, ExtensionBuildError
from ssmamba.ops.scan_ref import selective_scan_ref

__all__ = [
    "BACKEND_ENV",
    "NO_BUILD_ENV",
    "Backend",
    "ExtensionBuildError",
    "ScanFallbackWarning",
    "ScanDirection",
    "ScanShape",
    "backend_report",
    "check_scan_inputs",
    "choose_backend",
    "direction_orders",
    "directional_scan",
    "directional_scan_ref",
    "scan_order",
    "selective_scan",
    "selective_scan_ref",
    "warn_once",
]
