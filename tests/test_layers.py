"""The package's layers only point down: import-linter's contracts in pyproject.toml hold, and they break on an
upward, sideways or package-root import, also one made lazily inside a function."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]

_LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root/src`` with ``root/pyproject.toml``'s contracts."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-c", _LINT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def _copy_with(tmp_path: Path, module: str, code: str) -> Path:
    """A copy of the package and its contracts with ``code`` appended to ``module`` (a path under ssmamba/)."""
    shutil.copytree(ROOT / "src" / "ssmamba", tmp_path / "src" / "ssmamba",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "ssmamba" / module
    target.write_text(target.read_text() + code)
    return tmp_path


def test_the_layer_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layers only point down KEPT" in result.stdout
    assert "No module imports the package root KEPT" in result.stdout


@pytest.mark.parametrize("module,code,contract,chain", [
    pytest.param("data/splits.py", "\n\ndef _upward():\n    from ssmamba.workflows.demo import run_pipeline\n",
                 "Layers only point down", "ssmamba.data.splits -> ssmamba.workflows.demo", id="lazy-upward"),
    pytest.param("train/optim.py", "\nfrom ssmamba.wsi.tiling import TileGrid  # noqa\n",
                 "Layers only point down", "ssmamba.train.optim -> ssmamba.wsi.tiling", id="train-imports-wsi"),
    pytest.param("ops/fallback.py", "\nfrom ssmamba.io.atomic import atomic_write_text  # noqa\n",
                 "Layers only point down", "ssmamba.ops.fallback -> ssmamba.io.atomic", id="sideways-at-the-bottom"),
    pytest.param("io/atomic.py", "\n\ndef _version():\n    from ssmamba import __version__\n    return __version__\n",
                 "No module imports the package root", "ssmamba.io.atomic -> ssmamba", id="package-root"),
])
def test_an_import_against_the_layers_breaks_a_contract(tmp_path, module, code, contract, chain):
    result = _lint(_copy_with(tmp_path, module, code))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert chain in result.stdout
