"""The wsi commands end to end: tile -> extract -> heatmap on the real CMU-1 slide, and --skip-errors."""

from __future__ import annotations

import shutil

import numpy as np
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from ssmamba.cli import main


def test_tile_extract_heatmap_on_the_real_slide(cmu_slide, tmp_path):
    from ssmamba.mil import create_mil_head, save_mil_model

    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["wsi", "tile", str(cmu_slide), "--out", str(out), "--magnification", "20",
                                  "--patch-size", "224"])
    assert result.exit_code == 0, result.output
    patches = out / "patches_0.50mpp_224px"
    assert (patches / "CMU-1-Small-Region.h5").is_file() and (patches / "CMU-1-Small-Region.png").is_file()
    assert yaml.safe_load((out / "wsi-tile.yaml").read_text())["tile"]["magnification"] == 20

    result = runner.invoke(main, ["wsi", "extract", str(out), "--encoder", "ssmamba_test", "--img-size", "64",
                                  "--batch-size", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "embedded at 64 px" in result.output and "resized to 64 px (--img-size)" in result.output
    (folder,) = (out / "features_0.50mpp_224px").iterdir()
    assert folder.name.startswith("ssmamba_test-random-") and folder.name.endswith("_in64")
    features = folder / "CMU-1-Small-Region.h5"
    assert features.is_file()
    result = runner.invoke(main, ["wsi", "extract", str(out), "--encoder", "ssmamba_test", "--img-size", "64"])
    assert "already done" in result.output

    torch.manual_seed(0)
    model_dir = save_mil_model(create_mil_head("abmil", 64, 2), tmp_path / "head", head_name="abmil",
                               head_kwargs={}, class_names=["no", "yes"])
    png = tmp_path / "heat" / "cmu.png"
    result = runner.invoke(main, ["wsi", "heatmap", str(cmu_slide), "--features", str(features), "--heads",
                                  str(model_dir), "--out", str(png), "--thumbnail-size", "512"])
    assert result.exit_code == 0, result.output
    assert "prediction: no" in result.output and "attention of the abmil head" in result.output
    image = Image.open(png)
    assert image.height == 512 and image.width == 512 * 2220 // 2967 + 150  # thumbnail + colour bar
    scores = np.loadtxt(png.with_suffix(".csv"), delimiter=",", skiprows=1)
    assert scores.shape[1] == 3 and np.isfinite(scores[:, 2]).all()

    np.save(tmp_path / "scores.npy", np.arange(len(scores), dtype=np.float32))
    result = runner.invoke(main, ["wsi", "heatmap", str(cmu_slide), "--features", str(features), "--scores",
                                  str(tmp_path / "scores.npy"), "--out", str(tmp_path / "given.png"),
                                  "--scaling", "raw", "--no-colour-bar", "--thumbnail-size", "512"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "given.png").height == 512 and Image.open(tmp_path / "given.png").width < 512

    result = runner.invoke(main, ["wsi", "heatmap", str(cmu_slide), "--features", str(features), "--pca",
                                  "--out", str(tmp_path / "pca.png"), "--thumbnail-size", "512"])
    assert result.exit_code == 0, result.output
    assert "feature PC1" in result.output
    pc1 = np.loadtxt(tmp_path / "pca.csv", delimiter=",", skiprows=1)[:, 2]
    assert abs(pc1.mean()) < 1e-3 * np.abs(pc1).max() and pc1.std() > 0
    result = runner.invoke(main, ["wsi", "heatmap", str(cmu_slide), "--features", str(features), "--pca",
                                  "--heads", str(model_dir), "--out", str(tmp_path / "both.png")])
    assert result.exit_code != 0 and "exactly one of" in result.output


def test_corrupt_slide_is_reported_not_fatal_with_skip_errors(blob_slide, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(blob_slide[0], slides / "good.tif")
    (slides / "broken.svs").write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["wsi", "tile", str(slides), "--out", str(out), "--mpp", "1.0", "--patch-size", "128"]

    result = runner.invoke(main, args + ["--skip-errors"])
    assert result.exit_code == 0, result.output
    log = out / "patches_1.00mpp_128px" / "errors.log"
    assert "broken.svs" in log.read_text() and "SlideError" in log.read_text()
    assert (out / "patches_1.00mpp_128px" / "good.h5").is_file()
    assert "1 slide(s) failed" in result.output

    result = runner.invoke(main, args + ["--overwrite"])
    assert result.exit_code != 0
    assert "broken.svs" in result.output and "--skip-errors" in result.output


def test_missing_mpp_error_names_the_override(tmp_path):
    image = tmp_path / "crop.png"
    Image.new("RGB", (300, 300), (200, 120, 170)).save(image)
    runner = CliRunner()
    result = runner.invoke(main, ["wsi", "tile", str(image), "--out", str(tmp_path / "out"), "--patch-size", "100"])
    assert result.exit_code != 0 and "--slide-mpp" in result.output
    result = runner.invoke(main, ["wsi", "tile", str(image), "--out", str(tmp_path / "out"), "--patch-size", "100",
                                  "--slide-mpp", "0.5", "--no-tissue-mask"])
    assert result.exit_code == 0, result.output
    assert "9 tiles" in result.output
