"""What importing the data package costs: the commands that read data without splitting it (`wsi extract`,
`predict`) import ssmamba.data, and sklearn is about a second of their start-up. Splitting itself is tested in
test_manifest.py."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_data_package_loads_no_sklearn():
    code = "import sys, ssmamba.data, ssmamba.data.splits; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr

