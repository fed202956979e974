"""Fixtures for the selective-scan tests: the compiled CPU kernel and a factory of random scan problems."""

from __future__ import annotations

from typing import Callable

import pytest

from scan_problems import ScanProblem, make_problem
from ssmamba.ops import ExtensionBuildError
from ssmamba.ops.scan_cpu import extension_status, load_extension


@pytest.fixture(scope="session")
def cpu_kernel():
    """The compiled CPU kernel (built once, about a minute the very first time). Skips only where no compiler or
    ninja exists; a real build failure fails the tests that need it."""
    available, why = extension_status()
    if not available:
        pytest.skip(f"CPU kernel cannot be built here: {why}")
    try:
        return load_extension()
    except ExtensionBuildError as error:
        pytest.fail(f"building the CPU kernel failed:\n{error}")


@pytest.fixture
def problem_factory() -> Callable[..., ScanProblem]:
    return make_problem
