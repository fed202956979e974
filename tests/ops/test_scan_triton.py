"""The Triton kernels against the reference without a GPU: Triton's interpreter (``TRITON_INTERPRET=1``, which must
be set before the kernels are defined, hence a fresh process) runs them on CPU tensors. On a GPU, test_scan_cuda.py
runs them compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")

# Lengths around the checkpoint interval (set to 16 here so that several chunks, a partial last one and a single
# step all occur); a block of channels larger than dim/G (masked lanes), N = 1, 16 and 5 (padded to 8).
CASES = [
    dict(length=1, state=4, groups=2, dim=8),
    dict(length=16, state=16, groups=None, dim=8),
    dict(length=37, state=16, groups=2, dim=12),
    dict(length=130, state=5, groups=None, dim=6),
    dict(length=40, state=1, groups=4, dim=8),
]
# More than one block of channels per (batch, group), so dB and dC are sums of per-block partials: 64 channels per
# group at N = 16 are two blocks of 32; 320 ungrouped channels at N = 4 are three blocks of 128, the last one partial.
MULTI_BLOCK_CASES = [
    dict(length=20, state=16, groups=2, dim=128),
    dict(length=9, state=4, groups=None, dim=320),
]
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from scan_problems import make_problem, outputs_and_grads, relative_error
    from ssmamba.ops import scan_triton
    from ssmamba.ops.scan_ref import run_scan, selective_scan_ref

    scan_triton.CHUNK = 16

    def triton_scan(*args, **kwargs):
        return run_scan(*args, steps=scan_triton.triton_scan_steps, **kwargs)

    errors = []
    for case in json.loads(sys.argv[1]):
        problem = make_problem(batch=2, **case)
        expected = outputs_and_grads(problem, selective_scan_ref)
        actual = outputs_and_grads(problem, triton_scan)
        errors.append({name: relative_error(actual[name], expected[name]) for name in expected})
        channels = case["dim"] // (case["groups"] or 1)
        errors[-1]["channel_blocks"] = -(-channels // scan_triton._launch_shape(channels, case["state"])[0])
    print(json.dumps(errors))
    """
)


def _interpreted_errors(cases: list[dict]) -> list[dict]:
    here = Path(__file__).resolve().parent
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cases)], env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_interpreted_kernels_match_ref():
    for case, case_errors in zip(CASES, _interpreted_errors(CASES)):
        case_errors.pop("channel_blocks")
        assert set(case_errors) >= {"out", "last_state", "du", "ddelta", "dA", "dB", "dC"}
        assert max(case_errors.values()) <= 1e-5, (case, case_errors)


def test_interpreted_kernels_sum_db_dc_across_channel_blocks():
    for case, case_errors in zip(MULTI_BLOCK_CASES, _interpreted_errors(MULTI_BLOCK_CASES)):
        assert case_errors.pop("channel_blocks") >= 2, case
        assert set(case_errors) >= {"out", "last_state", "du", "ddelta", "dA", "dB", "dC"}
        assert max(case_errors.values()) <= 1e-5, (case, case_errors)
