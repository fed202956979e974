"""``ssmamba benchmark``: same-budget leaderboards of SSMamba, its ablations and timm baselines on one data set.

A benchmark is a grid of *cells*, one per (entry, seed). Each cell optionally pretrains with MAMIM, fine-tunes with
the one recipe every entry shares, and evaluates its best-on-validation checkpoint on the test split, natively and
under magnification shift. Cells are written atomically and never recomputed, so a killed benchmark continues where
it stopped and a new seed or entry reuses every finished cell. The leaderboard (Markdown, JSON, PNG) aggregates
whatever cells exist.
"""

from ssmamba.workflows.benchmark.entries import PRESETS, Entry, parse_entry
from ssmamba.workflows.benchmark.leaderboard import build_leaderboard, write_leaderboard
from ssmamba.workflows.benchmark.runner import BenchmarkConfig, run_benchmark

__all__ = ["BenchmarkConfig", "run_benchmark", "Entry", "PRESETS", "parse_entry", "build_leaderboard",
           "write_leaderboard"]
