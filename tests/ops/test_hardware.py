"""CPU feature detection for bfloat16, and the Trainer's warning when bf16 would be emulated."""

import logging
import sys

import pytest
import torch

from ssmamba.ops import hardware
from ssmamba.train.engine import Precision, Trainer

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo-style files")


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


@linux_only
@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx avx2 fma", False),
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_bf16 amx_tile", True),
])
def test_x86_flags(tmp_path, flags, expected):
    assert hardware.cpu_has_native_bf16.__wrapped__(_cpuinfo(tmp_path, flags)) is expected


@linux_only
def test_arm_features_line(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert hardware.cpu_has_native_bf16.__wrapped__(path) is True


def test_unknown_when_no_cpuinfo(tmp_path):
    assert hardware.cpu_has_native_bf16.__wrapped__(tmp_path / "missing") is None


@pytest.mark.parametrize("native, warns", [(False, True), (True, False), (None, False)])
def test_trainer_warns_for_emulated_bf16(tmp_path, monkeypatch, caplog, native, warns):
    import ssmamba.train.engine as engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    model = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING, logger="ssmamba.train.engine"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), None, [(torch.zeros(1, 2),)], tmp_path, 1,
                precision=Precision.BF16)
    assert ("without bfloat16 hardware" in caplog.text) is warns
