"""Which backend `auto` picks, the environment switches, and the one-time fallback warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from scan_problems import make_problem
from ssmamba.ops import (
    BACKEND_ENV,
    NO_BUILD_ENV,
    Backend,
    ExtensionBuildError,
    ScanFallbackWarning,
    backend_report,
    choose_backend,
    dispatch,
    fallback,
    scan_cpu,
    selective_scan,
    selective_scan_ref,
    warn_once,
)


@pytest.fixture
def fresh_fallback_state(monkeypatch):
    """A kernel loader that has never tried to build, and no warning emitted yet."""
    monkeypatch.setattr(scan_cpu, "_loader", scan_cpu._KernelLoader())
    monkeypatch.setattr(fallback, "_warned", set())
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def test_auto_uses_the_cpu_kernel_for_cpu_tensors(cpu_kernel, monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert choose_backend(torch.device("cpu"))[0] == "cpu"
    p = make_problem(requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScanFallbackWarning)
        auto = p.run(selective_scan)
    assert torch.equal(auto[0], p.run(selective_scan, backend="cpu")[0])  # the kernel is deterministic


def test_env_forces_ref(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "ref")
    name, why = choose_backend("cpu")
    assert name == "ref" and BACKEND_ENV in why
    p = make_problem(requires_grad=False)
    assert torch.equal(p.run(selective_scan)[0], p.run(selective_scan_ref)[0])


def test_env_with_unknown_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=f"unknown {BACKEND_ENV} value 'fast'"):
        choose_backend("cpu")


def test_env_forced_cpu_does_not_fall_back(fresh_fallback_state, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "cpu")
    monkeypatch.setenv(NO_BUILD_ENV, "1")
    with pytest.raises(ExtensionBuildError, match=NO_BUILD_ENV):
        make_problem(requires_grad=False).run(selective_scan)


def test_explicit_backend_beats_env(cpu_kernel, monkeypatch):
    """With the variable forcing one backend, an explicit ``backend=`` still runs the other: spies on both say
    which ran."""
    ran = []

    def spy(name, function):
        def run(*args):
            ran.append(name)
            return function(*args)
        return run

    monkeypatch.setattr(dispatch, "selective_scan_cpu", spy("cpu", dispatch.selective_scan_cpu))
    monkeypatch.setitem(dispatch._IMPLEMENTATIONS, Backend.CPU, spy("cpu", dispatch._IMPLEMENTATIONS[Backend.CPU]))
    monkeypatch.setitem(dispatch._IMPLEMENTATIONS, Backend.REF, spy("ref", dispatch._IMPLEMENTATIONS[Backend.REF]))
    p = make_problem(requires_grad=False)
    monkeypatch.setenv(BACKEND_ENV, "ref")
    p.run(selective_scan)
    assert ran == ["ref"]  # the variable is in force
    for explicit in (Backend.CPU, "cpu"):
        ran.clear()
        p.run(selective_scan, backend=explicit)
        assert ran == ["cpu"], explicit
    monkeypatch.setenv(BACKEND_ENV, "cpu")
    ran.clear()
    p.run(selective_scan, backend="ref")
    assert ran == ["ref"]


def test_disabled_build_falls_back_to_ref_with_one_warning(fresh_fallback_state, monkeypatch):
    monkeypatch.setenv(NO_BUILD_ENV, "1")
    assert choose_backend("cpu")[0] == "ref"
    p = make_problem(requires_grad=False)
    with pytest.warns(ScanFallbackWarning, match=f"{NO_BUILD_ENV}=1"):
        first = p.run(selective_scan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        second = p.run(selective_scan)
    expected = p.run(selective_scan_ref)
    assert torch.equal(first[0], expected[0]) and torch.equal(second[0], expected[0])


def test_failed_build_warns_with_the_compiler_log_and_is_not_retried(fresh_fallback_state, monkeypatch):
    attempts = []

    def broken_build():
        attempts.append(1)
        raise ExtensionBuildError("compiling selective_scan_cpu.cpp failed", "error: no such instruction: 'vfoo'")

    monkeypatch.setattr(scan_cpu._KernelLoader, "_build", staticmethod(broken_build))
    p = make_problem(requires_grad=False)
    with pytest.warns(ScanFallbackWarning, match="no such instruction: 'vfoo'"):
        p.run(selective_scan)
    p.run(selective_scan)
    assert len(attempts) == 1
    with pytest.raises(ExtensionBuildError, match="vfoo"):  # asked for by name, it must not fall back silently
        p.run(selective_scan, backend="cpu")
    assert dict((name, ok) for name, ok, _ in backend_report())["cpu"] is False


def test_backend_report_covers_every_backend():
    report = {name: (ok, why) for name, ok, why in backend_report()}
    assert set(report) == {"ref", "cpu", "cuda"}
    assert report["ref"][0] is True
    if not torch.cuda.is_available():
        assert report["cuda"] == (False, "no CUDA device")


def test_warn_once_is_per_key(monkeypatch):
    monkeypatch.setattr(fallback, "_warned", set())
    with pytest.warns(ScanFallbackWarning):
        assert warn_once("a", "first") is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_once("a", "again") is False
    with pytest.warns(ScanFallbackWarning, match="other"):
        assert warn_once("b", "other") is True


def test_import_and_report_compile_nothing(tmp_path):
    """Importing ssmamba (and asking what is available) must never start a build."""
    code = (
        "import ssmamba, ssmamba.ops as ops, torch; ops.backend_report(); ops.choose_backend(torch.device('cpu'))"
    )
    env = os.environ | {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []
