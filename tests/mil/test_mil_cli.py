"""The mil commands end to end on generated feature files, and crchp image bags through the wsi commands."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from ssmamba.cli import main


def test_train_with_kfold_cv_then_evaluate(bag_folder, tmp_path):
    table, features = bag_folder
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["mil", "train", "--csv", str(table), "--features", str(features), "--head", "abmil",
                                  "--head-args", "hidden_dim=32", "--folds", "3", "--epochs", "3", "--lr", "1e-3",
                                  "--bootstrap", "50", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mean ± std" in result.output and "patients (patient_id)" in result.output
    summary = json.loads((out / "cv_summary.json").read_text())
    assert len(summary["folds"]) == 3 and summary["summary"]["auroc"]["n"] == 3
    assert summary["pooled_out_of_fold"]["n"] == 24
    assert summary["settings"]["head_kwargs"] == {"hidden_dim": 32}
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["head_args"] == {"hidden_dim": 32}
    markdown = (out / "summary.md").read_text()
    pooled = summary["pooled_out_of_fold"]
    low, high = pooled["ci95"]["auroc"]
    assert "## Pooled out-of-fold" in markdown and "24 bags" in markdown
    assert f"| AUROC | {pooled['auroc']:.4f} | {low:.4f} – {high:.4f} |" in markdown
    fold_rows = [line for line in markdown.splitlines() if line.startswith(("| 0 |", "| 1 |", "| 2 |"))]
    assert len(fold_rows) == 3
    assert f"| 0 | {summary['folds'][0]['n']} | {summary['folds'][0]['auroc']:.4f} |" in markdown
    page = (out / "summary.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # pooled confusion matrix, pooled ROC, loss curves
    assert f'<td class="num">{low:.4f} – {high:.4f}</td>' in page and "<h2>Per fold</h2>" in page
    fold_page = (out / "fold_0" / "report.html").read_text()
    assert fold_page.count('src="data:image/png;base64,') == 3 and "curves" in fold_page
    for k in range(3):
        fold = out / f"fold_{k}"
        for name in ("mil_model.safetensors", "mil_config.json", "predictions.csv", "metrics.json", "report.md",
                     "report.html", "curves.png"):
            assert (fold / name).is_file(), name
    predictions = (out / "fold_0" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "slide_id,label,prediction,prob_benign,prob_tumour"

    result = runner.invoke(main, ["mil", "evaluate", "--heads", str(out), "--csv", str(table), "--features",
                                  str(features), "--out", str(tmp_path / "eval"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "3 head(s)" in result.output
    assert "bags:" in result.output  # a progress bar over the bags of each head
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 24 and metrics["classes"] == ["benign", "tumour"]
    quiet = runner.invoke(main, ["mil", "evaluate", "--heads", str(out), "--csv", str(table), "--features",
                                 str(features), "--out", str(tmp_path / "quiet"), "--bootstrap", "0", "--threads", "1",
                                 "--no-progress"])
    assert quiet.exit_code == 0, quiet.output
    assert "bags:" not in quiet.output and "3 head(s)" in quiet.output
    assert (tmp_path / "quiet" / "predictions.csv").read_text() == (tmp_path / "eval" / "predictions.csv").read_text()


def test_train_on_the_split_column(tmp_path, key_instance_bags, bag_writer):
    bags = key_instance_bags(20, dim=6)
    ids = bag_writer(tmp_path / "features", bags)
    splits = ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    csv = tmp_path / "bags.csv"
    csv.write_text("slide_id,label,split\n" + "".join(f"{i},{b[2]},{s}\n" for i, b, s in zip(ids, bags, splits)))
    result = CliRunner().invoke(main, ["mil", "train", "--csv", str(csv), "--features", str(tmp_path / "features"),
                                       "--head", "transmil", "--head-args", "dim=32", "--head-args", "num_heads=4",
                                       "--epochs", "2", "--bootstrap", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train"]) == 12 and len(split["val"]) == 4 and len(split["test"]) == 4
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "val_loss" in history[0]


def test_helpful_errors(bag_folder, tmp_path):
    table, features = bag_folder
    runner = CliRunner()
    result = runner.invoke(main, ["mil", "train", "--csv", str(table), "--features", str(features),
                                  "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "--folds" in result.output
    result = runner.invoke(main, ["mil", "train", "--csv", str(table), "--features", str(features), "--folds", "2",
                                  "--head-args", "oops", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


def test_crchp_images_become_bags(shared_data, tmp_path):
    """Plain PNG crops tiled into a grid of small patches are MIL bags like slides (issue item 6)."""
    crchp = shared_data / "crchp"
    if not (crchp / "bags.csv").is_file():
        pytest.skip("crchp not found")
    rows = (crchp / "bags.csv").read_text().splitlines()[1:]
    chosen = [next(r for r in rows if r.split(",")[2] == "0"), next(r for r in rows if r.split(",")[2] == "1")]
    images = tmp_path / "images"
    images.mkdir()
    for row in chosen:
        shutil.copy(crchp / row.split(",")[0], images)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["wsi", "tile", str(images), "--out", str(out), "--slide-mpp", "0.5", "--mpp", "0.5",
                                  "--patch-size", "100", "--no-tissue-mask"])
    assert result.exit_code == 0, result.output
    assert result.output.count("25 tiles") == 2  # 500 x 500 px images, 5 x 5 grid
    result = runner.invoke(main, ["wsi", "extract", str(out), "--encoder", "ssmamba_test", "--img-size", "32"])
    assert result.exit_code == 0, result.output
    from ssmamba.mil.bags import BagDataset, read_bag_table

    with pytest.warns(UserWarning, match="left out"):
        (folder,) = (out / "features_0.50mpp_100px").iterdir()
        table = read_bag_table(crchp / "bags.csv", folder, id_column="image", allow_missing=True)
    assert sorted(r.label for r in table.records) == [0, 1]
    features, coords, _ = BagDataset(table.records)[0]
    assert features.shape == (25, 64) and coords.max() == 400
