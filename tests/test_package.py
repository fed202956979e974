"""The package root: importing ssmamba changes nothing outside it, and the CLI still gets what it needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# what a process looks like from outside: its environment, matplotlib's backend, the logging handlers
_SNAPSHOT = """
import json, logging, os, sys
def snapshot():
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                      if isinstance(l, logging.Logger)]
    return {"env": dict(os.environ), "handlers": sorted(f"{l.name}:{h!r}" for l in loggers for h in l.handlers),
            "pyplot": "matplotlib.pyplot" in sys.modules}
"""


def _run(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SNAPSHOT + code], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_ssmamba_changes_nothing_and_loads_no_torch():
    result = _run("""
before = snapshot()
import ssmamba
after = snapshot()
print(json.dumps({"before": before, "after": after, "torch": "torch" in sys.modules, "version": ssmamba.__version__}))
""")
    assert result["after"] == result["before"]
    assert "OMP_WAIT_POLICY" not in result["after"]["env"]
    assert result["torch"] is False and result["version"]


def test_importing_every_subpackage_sets_no_variable_backend_or_handler():
    """Beyond what torch, timm and scikit-learn do on their own import: every ssmamba module, matplotlib's
    ``use`` watched."""
    result = _run("""
import torch, timm, sklearn, matplotlib, matplotlib.figure
calls = []
matplotlib.use = lambda *a, **k: calls.append(a)
before = snapshot()
import importlib, pkgutil, ssmamba
names = [m.name for m in pkgutil.walk_packages(ssmamba.__path__, "ssmamba.") if ".__main__" not in m.name]
for name in names:
    importlib.import_module(name)
after = snapshot()
print(json.dumps({"before": before, "after": after, "use": calls, "n": len(names)}))
""")
    assert result["n"] > 30
    assert result["use"] == []
    assert result["after"] == result["before"]


def test_cli_sets_passive_openmp_waiting_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads it: the CLI must set it before any torch import."""
    result = _run("""
import importlib.abc
seen = {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "policy" not in seen:
            seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Spy())
from ssmamba.cli import main
torch_after_cli_import = "torch" in sys.modules
main(["info"], standalone_mode=False)
print(json.dumps({"early_torch": torch_after_cli_import, "policy": seen.get("policy")}))
""")
    assert result["early_torch"] is False
    assert result["policy"] == "PASSIVE"


def test_a_users_own_openmp_setting_wins(monkeypatch):
    pytest.importorskip("click")
    from click.testing import CliRunner

    from ssmamba.cli import main

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_lazy_root_still_gives_the_api():
    import ssmamba

    assert callable(ssmamba.create_model) and "ssmamba_tiny" in ssmamba.list_models()
    from ssmamba import save_pretrained  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ssmamba.nope  # noqa: B018
