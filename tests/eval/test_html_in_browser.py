"""The HTML report in a real headless browser (Chromium from the system packages; skipped without it).

The screenshot is kept in pytest's tmp folder; ``SSMAMBA_SCREENSHOT_DIR=DIR`` copies it there to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from ssmamba.eval.metrics import compute_metrics
from ssmamba.eval.report import write_report

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)


@pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium)")
def test_report_renders_with_its_embedded_figures(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90)
    probs[np.arange(90), y] += 0.6
    metrics = compute_metrics(y, probs / probs.sum(1, keepdims=True), ["stroma", "lymphocytes", "tumour"],
                              n_bootstrap=100)
    report = write_report(metrics, tmp_path / "report", probs=probs, y_true=y, title="Browser check")["report.html"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(report, alone / "report.html")  # without its PNGs: everything must be inside the page
    screenshot = tmp_path / "screenshot.png"
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1900", f"--screenshot={screenshot}", (alone / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    if os.environ.get("SSMAMBA_SCREENSHOT_DIR"):
        shutil.copy(screenshot, os.environ["SSMAMBA_SCREENSHOT_DIR"])
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1900, 1000)
    dark_blue = (pixels[..., 2] > 100) & (pixels[..., 0] < 60) & (pixels[..., 1] < 90)  # matrix diagonal cells
    assert dark_blue.sum() > 2000, "the confusion-matrix image did not render"
    text_rows = ((pixels < 100).all(-1).sum(1) > 5).sum()  # rows crossed by dark text or lines
    assert text_rows > 200, "the tables did not render"
