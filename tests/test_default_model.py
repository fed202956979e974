"""One default model for every entry point: the variant chosen on evidence (docs/results.md, "Issue 16")."""

from __future__ import annotations

import timm

from ssmamba.models import create_model
from ssmamba.models.ssmamba import variant_configs
from ssmamba.train.config import DEFAULT_MODEL, FinetuneConfig, PretrainConfig
from ssmamba.workflows.benchmark.entries import parse_entry
from ssmamba.workflows.benchmark.runner import BenchmarkConfig
from ssmamba.workflows.demo import PipelineConfig


def test_every_entry_point_builds_the_default_model():
    assert DEFAULT_MODEL == "ssmamba_tiny_fast"
    assert timm.is_model(DEFAULT_MODEL)
    defaults = {"finetune": FinetuneConfig.model, "pretrain": PretrainConfig.model, "demo": PipelineConfig.model,
                "benchmark backbone": BenchmarkConfig.backbone, "benchmark preset": parse_entry("ssmamba").model}
    assert defaults == dict.fromkeys(defaults, DEFAULT_MODEL)


def test_the_default_is_ssmamba_tiny_with_the_cheaper_dms():
    tiny, default = variant_configs()["ssmamba_tiny"], variant_configs()[DEFAULT_MODEL]
    assert (default.dims, default.depths, default.conv_kernels, default.lpr) == \
        (tiny.dims, tiny.depths, tiny.conv_kernels, tiny.lpr)
    assert (tuple(tiny.directions), tuple(tiny.scales), tiny.scalar_decay) == \
        (("row", "row_reverse", "column", "column_reverse"), (1, 2), False)
    assert (tuple(default.directions), tuple(default.scales), default.scalar_decay) == \
        (("row", "row_reverse"), (1,), True)
    n_tiny = sum(p.numel() for p in create_model("ssmamba_tiny").parameters())
    n_default = sum(p.numel() for p in create_model(DEFAULT_MODEL).parameters())
    assert 0.8 * n_tiny < n_default < n_tiny  # fewer per-direction projections and decays, same widths
