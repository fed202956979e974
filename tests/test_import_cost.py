"""What a command's imports cost at start-up: modules that only some commands need stay out of the others.
sklearn is about a second, matplotlib more."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded_after(imports: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import json, sys; import {imports}; print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("imports, unwanted", [
    # `wsi extract` reads data without splitting it (splitting is tested in data/test_manifest.py)
    ("ssmamba.data, ssmamba.data.splits", ("sklearn",)),
    # `ssmamba predict`: a classifier, images and probabilities; no metrics, no report
    ("ssmamba.cli.evaluate, ssmamba.data, ssmamba.data.imageio, ssmamba.eval.inference, ssmamba.io.runs, "
     "ssmamba.workflows.classifier", ("sklearn", "matplotlib")),
])
def test_commands_import_only_what_they_use(imports, unwanted):
    assert _loaded_after(imports, unwanted) == []
