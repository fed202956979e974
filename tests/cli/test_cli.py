"""The `ssmamba` command line on tiny inputs: each command, and the demo end to end at a reduced size."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from ssmamba import __version__
from ssmamba.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_help_version_and_info():
    assert "pretrain" in invoke("--help").output
    assert __version__ in invoke("--version").output
    info = invoke("info").output
    assert "scan backends" in info and "auto on cpu:" in info


def test_the_command_list_matches_the_commands():
    """`ssmamba --help` lists the commands from stored summaries; each must begin that command's own help."""
    from ssmamba.cli import _COMMANDS

    for name in _COMMANDS:
        command = main.get_command(None, name)
        assert " ".join(command.help.split()).startswith(_COMMANDS[name][2].rstrip(".")), name
        assert " ".join(_COMMANDS[name][2].split()[:4]) in " ".join(invoke("--help").output.split())


# every command: each one's config lives in a module that imports no torch
LIGHT_COMMANDS = ("pretrain", "finetune", "evaluate", "predict", "probe", "demo", "benchmark", "wsi tile",
                  "wsi extract", "wsi heatmap", "mil train", "mil evaluate")


@pytest.mark.parametrize("args", [["--help"], *([*name.split(), "--help"] for name in LIGHT_COMMANDS),
                                  ["finetune", "--no-such-option"]])
def test_help_and_usage_errors_import_no_torch(args):
    """`ssmamba --help` took 8 s when listing the commands imported them all (torch, timm, sklearn), and `ssmamba
    finetune --help` 6 s when its config lived with the training code."""
    code = ("import sys; from ssmamba.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'sklearn', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_unknown_config_keys_are_rejected(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\nlearning_rate_typo: 3\n")
    result = CliRunner().invoke(main, ["pretrain", "--config", str(config)])
    assert result.exit_code != 0 and "learning_rate_typo" in result.output


@pytest.fixture
def trained(image_folder, tmp_path_factory):
    """pretrain -> finetune through the CLI, with a YAML config whose values the command line overrides."""
    out = tmp_path_factory.mktemp("cli")
    config = out / "pretrain.yaml"
    config.write_text(yaml.safe_dump({"model": "ssmamba_test", "img_size": 32, "crop_size": 32,
                                      "mask_patch_size": 8, "epochs": 5, "batch_size": 8}))
    invoke("pretrain", "--config", config, "--data", image_folder, "--out", out / "pre", "--epochs", 1,
           "--model-args", "lpr=false", "--model-args", "directions=[row, column]", "--no-progress")
    saved = yaml.safe_load((out / "pre" / "config.yaml").read_text())
    assert saved["pretrain"]["epochs"] == 1 and saved["pretrain"]["model"] == "ssmamba_test"
    assert saved["pretrain"]["model_args"] == {"lpr": False, "directions": ["row", "column"]}
    invoke("finetune", "--data", image_folder, "--init", out / "pre" / "checkpoint", "--out", out / "ft",
           "--img-size", 32, "--crop-size", 32, "--epochs", 1, "--batch-size", 8, "--no-progress")
    return out


def test_a_saved_run_config_can_be_passed_back(trained, tmp_path):
    invoke("pretrain", "--config", trained / "pre" / "config.yaml", "--out", tmp_path / "again", "--no-progress")
    first = yaml.safe_load((trained / "pre" / "config.yaml").read_text())["pretrain"]
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["pretrain"]
    assert {**first, "out": None} == {**again, "out": None}


def test_evaluate_predict_and_probe(trained, image_folder, tmp_path):
    invoke("evaluate", "--checkpoint", trained / "ft" / "best", "--data", image_folder, "--split", "test",
           "--out", tmp_path / "eval", "--bootstrap", 20)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())["evaluate"]["bootstrap"] == 20
    # the same number, computed here from the checkpoint and the test split without the evaluation code
    from sklearn.metrics import balanced_accuracy_score

    from ssmamba import create_model
    from ssmamba.data import load_dataset
    from ssmamba.data.transforms import eval_transform

    model = create_model(checkpoint=trained / "ft" / "best").eval()
    cfg = model.pretrained_cfg
    test_set = load_dataset(image_folder, "test", eval_transform(cfg["input_size"][-1], cfg["mean"], cfg["std"]),
                            classes=cfg["class_names"])
    with torch.no_grad():
        predicted = [int(model(image[None]).argmax()) for image, _ in test_set]
    labels = [label for _, label in test_set]
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test_set) > 0
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-9)
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()

    invoke("predict", "--checkpoint", trained / "ft" / "best", image_folder, "--out", tmp_path / "pred.csv")
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 26 and {"path", "prediction", "prob_benign", "prob_tumour"} <= set(rows[0])
    assert yaml.safe_load((tmp_path / "pred.yaml").read_text())["predict"]["inputs"] == str(image_folder)
    single = next(image_folder.glob("benign/*.png"))
    invoke("predict", "--checkpoint", trained / "ft" / "best", single, "--out", tmp_path / "one.csv")
    assert len(list(csv.DictReader(open(tmp_path / "one.csv")))) == 1
    invoke("predict", "--checkpoint", trained / "ft" / "best", single, "--out", tmp_path / "tta.csv", "--tta")
    tta_row = next(csv.DictReader(open(tmp_path / "tta.csv")))
    assert abs(sum(float(tta_row[f"prob_{c}"]) for c in ("benign", "tumour")) - 1) < 1e-5
    invoke("evaluate", "--checkpoint", trained / "ft" / "best", "--data", image_folder, "--split", "test",
           "--out", tmp_path / "eval_tta", "--bootstrap", 0, "--tta")
    assert "8-view TTA" in (tmp_path / "eval_tta" / "report.md").read_text()

    invoke("probe", "--encoder", trained / "pre" / "checkpoint", "--data", image_folder, "--img-size", 32,
           "--out", tmp_path / "probe", "--k", 3)
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert {"linear", "knn"} <= set(probe)
    assert yaml.safe_load((tmp_path / "probe" / "config.yaml").read_text())["probe"]["k"] == 3


def test_demo_end_to_end_reduced(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--model", "ssmamba_test", "--img-size", 32,
                    "--n-per-class", 12, "--pretrain-epochs", 1, "--finetune-epochs", 1, "--batch-size", 16,
                    "--mask-patch-size", 8, "--threads", 1, "--no-progress")
    assert "synthetic" in result.output.lower()
    for stage in ("pretrain", "finetune"):  # --threads reaches both stages and is saved in their run configs
        assert yaml.safe_load((tmp_path / "demo" / stage / "config.yaml").read_text())[stage]["threads"] == 1
    assert yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())["demo"]["n_per_class"] == 12
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "balanced accuracy" in report
    for image in ("pretrain/loss.png", "finetune/curves.png", "finetune/test/confusion_matrix.png"):
        assert (tmp_path / "demo" / image).is_file(), image
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "balanced accuracy" in page and page.count('src="data:image/png;base64,') >= 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path), "--data", str(tmp_path),
                                       "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_a_timm_architecture_through_finetune_evaluate_predict_and_probe(image_folder, tmp_path):
    """`--model` takes any timm name: the same recipe, checkpoint format and reports as an ssmamba model."""
    invoke("finetune", "--data", image_folder, "--model", "test_convnext", "--out", tmp_path / "ft", "--img-size", 32,
           "--epochs", 1, "--batch-size", 8, "--no-progress")
    config = json.loads((tmp_path / "ft" / "best" / "config.json").read_text())
    assert config["architecture"] == "test_convnext" and config["library"] == "timm"
    assert config["pretrained_cfg"]["class_names"] == ["benign", "tumour"]
    invoke("evaluate", "--checkpoint", tmp_path / "ft" / "best", "--data", image_folder, "--split", "test",
           "--out", tmp_path / "eval", "--bootstrap", 0)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["classes"] == ["benign", "tumour"] and sum(map(sum, metrics["confusion_matrix"])) == metrics["n"]
    invoke("predict", "--checkpoint", tmp_path / "ft" / "best", image_folder, "--out", tmp_path / "pred.csv")
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 26
    assert all(abs(float(r["prob_benign"]) + float(r["prob_tumour"]) - 1) < 1e-4 for r in rows)
    invoke("probe", "--encoder", tmp_path / "ft" / "best", "--data", image_folder, "--img-size", 32,
           "--out", tmp_path / "probe", "--k", 3)
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert probe["encoder"].startswith("test_convnext-")  # architecture + weights hash


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_without_data_is_a_usage_error_not_a_read_of_the_current_directory(command, tmp_path):
    result = CliRunner().invoke(main, [command, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--data is required" in result.output
    assert not (tmp_path / "run").exists()


def test_threads_and_progress_options(image_folder, tmp_path):
    """--threads sets torch's CPU threads (and is saved with a training run); --no-progress silences the bars."""
    before = torch.get_num_threads()
    try:
        invoke("finetune", "--data", image_folder, "--model", "ssmamba_test", "--out", tmp_path / "ft", "--img-size", 32,
               "--epochs", 1, "--batch-size", 8, "--threads", 1, "--no-progress")
        assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["finetune"]["threads"] == 1
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before)
        quiet = invoke("evaluate", "--checkpoint", tmp_path / "ft" / "best", "--data", image_folder, "--out",
                       tmp_path / "q", "--bootstrap", 0, "--threads", 1, "--no-progress")
        noisy = invoke("evaluate", "--checkpoint", tmp_path / "ft" / "best", "--data", image_folder, "--out",
                       tmp_path / "n", "--bootstrap", 0)
        assert "predict" not in quiet.stderr and "predict" in noisy.stderr
        assert torch.get_num_threads() == 1  # evaluate's --threads 1 of the first call
    finally:
        torch.set_num_threads(before)
