"""Classification metrics with bootstrap confidence intervals, k-fold summaries and written reports.

Names are imported on first use, so ``import ssmamba.eval.inference`` does not pay for scikit-learn and
matplotlib.
"""

import importlib

_LAZY = {"SCALAR_METRICS": "metrics", "compute_metrics": "metrics", "summarise_folds": "metrics",
         "write_report": "report"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ssmamba.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ssmamba.eval' has no attribute {name!r}")
