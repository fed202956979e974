import base64
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ssmamba.eval.metrics import compute_metrics
from ssmamba.eval.report import write_report


def _case(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), y] += 0.5
    return y, probs / probs.sum(1, keepdims=True)


def test_report_files_are_written(tmp_path):
    y, probs = _case()
    metrics = compute_metrics(y, probs, ["stroma", "lymphocytes", "tumour"], n_bootstrap=200)
    written = write_report(metrics, tmp_path / "out", probs=probs, y_true=y, title="Synthetic check")
    assert set(written) == {"metrics.json", "report.md", "report.html", "confusion_matrix.png", "roc.png"}
    assert json.loads(written["metrics.json"].read_text()) == metrics
    for name in ("confusion_matrix.png", "roc.png"):
        with Image.open(written[name]) as image:
            assert image.size[0] > 200
    report = written["report.md"].read_text()
    assert report.startswith("# Synthetic check")
    low, high = metrics["ci95"]["accuracy"]
    assert f"| Accuracy | {metrics['accuracy']:.4f} | {low:.4f} – {high:.4f} |" in report
    assert "| lymphocytes |" in report and "![roc](roc.png)" in report
    assert "![confusion matrix](confusion_matrix.png)" in report
    assert "200 resamples" in report


def test_report_without_probabilities_has_no_roc(tmp_path):
    metrics = compute_metrics([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.1], ["neg", "pos"], n_bootstrap=0)
    written = write_report(metrics, tmp_path)
    assert "roc.png" not in written and not (tmp_path / "roc.png").exists()
    report = written["report.md"].read_text()
    assert "No confidence intervals" in report and "| AUROC | 1.0000 | n/a |" in report
    assert "AUROC of the positive class" in report


def test_html_report_is_self_contained_and_matches_the_markdown(tmp_path):
    y, probs = _case()
    metrics = compute_metrics(y, probs, ["stroma", "lymphocytes", "tumour"], n_bootstrap=100)
    written = write_report(metrics, tmp_path, probs=probs, y_true=y, title="Synthetic <check>")
    page = written["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h1>Synthetic &lt;check&gt;</h1>" in page
    low, high = metrics["ci95"]["accuracy"]
    assert (f'<tr><td>Accuracy</td><td class="num">{metrics["accuracy"]:.4f}</td>'
            f'<td class="num">{low:.4f} – {high:.4f}</td></tr>') in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # confusion matrix and ROC, embedded
    assert base64.b64decode(images[1]) == written["roc.png"].read_bytes()
    assert 'src="roc.png"' not in page and "http" not in page.replace("http-equiv", "")
    (tmp_path / "roc.png").unlink()  # the page does not need the PNGs beside it
    assert written["report.html"].read_text() == page


def test_inline_markup_renders_in_html():
    from ssmamba.eval.report import Document, Paragraph, Table

    page = Document("t").add(Paragraph("Settings: `{\"a\": 1}` and **bold**"),
                             Table(["x", "y"], [["**mean**", "1 < 2"]])).to_html(Path("."))
    assert "<code>{&quot;a&quot;: 1}</code>" in page and "<strong>bold</strong>" in page
    assert '<td><strong>mean</strong></td><td class="num">1 &lt; 2</td>' in page
