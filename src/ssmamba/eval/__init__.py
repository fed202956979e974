"""Classification metrics with bootstrap confidence intervals, k-fold summaries and written reports."""

from ssmamba.eval.metrics import SCALAR_METRICS, compute_metrics, summarise_folds
from ssmamba.eval.report import write_report

__all__ = ["SCALAR_METRICS", "compute_metrics", "summarise_folds", "write_report"]
