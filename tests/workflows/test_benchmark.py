"""`ssmamba benchmark`: entries, the magnification transform, resumable cells, the leaderboard's statistics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as F

from ssmamba.cli import main
from ssmamba.data.synthetic import make_synthetic_dataset
from ssmamba.data.transforms import CentreMagnification, eval_transform
from ssmamba.workflows.benchmark import PRESETS, parse_entry
from ssmamba.workflows.benchmark.cells import Cell, CellBusy
from ssmamba.workflows.benchmark.leaderboard import _entry_row, _paired

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# two entries x two seeds on a tiny generated data set: every stage runs, in seconds
TINY = ["--entries", "ssmamba,test_convnext", "--seeds", "0,1", "--backbone", "ssmamba_test", "--img-size", "32",
        "--epochs", "1", "--pretrain-epochs", "1", "--batch-size", "16", "--bootstrap", "100", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_per_class=8, size=32, seed=0)


def test_presets_and_model_entries():
    full = parse_entry("ssmamba", backbone="ssmamba_test")
    assert (full.model, full.mamim, full.model_args, full.family) == ("ssmamba_test", True, {}, "ssmamba")
    assert parse_entry("ssmamba-mamim").mamim is False
    assert parse_entry("ssmamba-dms").model_args == {"directions": ["row"], "scales": [1], "conv_kernels": [3]}
    assert parse_entry("ssmamba-lpr").model_args == {"lpr": False}
    plain = parse_entry("plain-mamba")
    assert not plain.mamim and plain.model_args["lpr"] is False and plain.model_args["directions"] == ["row"]
    assert set(PRESETS) == {"ssmamba", "ssmamba-mamim", "ssmamba-dms", "ssmamba-lpr", "plain-mamba"}
    assert parse_entry("ssmamba_small+mamim").mamim and parse_entry("ssmamba_small+mamim").model == "ssmamba_small"
    resnet = parse_entry("resnet18")
    assert (resnet.model, resnet.mamim, resnet.family) == ("resnet18", False, "baseline")
    with pytest.raises(ValueError, match="MAMIM pretraining is for ssmamba models"):
        parse_entry("resnet18+mamim")
    with pytest.raises(ValueError, match="not a preset"):
        parse_entry("no_such_model")
    with pytest.raises(ValueError, match="only stage"):
        parse_entry("ssmamba_tiny+simclr")


def _gradient_image(height: int = 40, width: int = 40) -> Image.Image:
    """Red = column, green = row, so where every output pixel came from can be read off."""
    rows, cols = np.mgrid[:height, :width]
    pixels = np.stack([cols * 255 // (width - 1), rows * 255 // (height - 1), np.full_like(rows, 128)], -1)
    return Image.fromarray(pixels.astype(np.uint8))


def test_centre_magnification_is_a_zoom_about_the_centre():
    image = _gradient_image()
    assert CentreMagnification(1.0)(image) is image
    twice = CentreMagnification(2.0)(image)
    assert twice.size == image.size
    expected = F.resize(F.center_crop(image, [20, 20]), [40, 40], antialias=True)
    np.testing.assert_array_equal(np.asarray(twice), np.asarray(expected))
    red = np.asarray(twice)[..., 0].astype(float)
    assert 50 < red[:, 0].mean() < 80 and 175 < red[:, -1].mean() < 205  # columns 10..29 of 0..39 only
    half = np.asarray(CentreMagnification(0.5)(image)).astype(float)
    # the central half of the output is the whole image shrunk; the border mirrors it outward
    shrunk = np.asarray(F.resize(image, [20, 20], antialias=True)).astype(float)
    assert np.abs(half[10:30, 10:30] - shrunk).mean() < 6
    np.testing.assert_allclose(half[:, :10, 0].mean(), half[:, 10:20, 0].mean(), atol=12)  # mirrored, not black
    constant = Image.new("RGB", (24, 24), (200, 30, 90))
    np.testing.assert_array_equal(np.asarray(CentreMagnification(0.25)(constant)), np.asarray(constant))
    with pytest.raises(ValueError, match="> 0"):
        CentreMagnification(0)
    assert "2x magnification" in eval_transform(32, magnification=2).describe()


def _cells(out, entry):
    return {seed: json.loads((out / "cells" / entry / f"seed_{seed}" / "result.json").read_text()) for seed in (0, 1)}


def test_two_entries_two_seeds_end_to_end_and_reuse(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["benchmark", "--data", str(tiny_data), "--out", str(out), *TINY],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["n_cells"] == {"done": 4, "total": 4} and board["best_baseline"] == "test_convnext"
    assert (out / "leaderboard.png").stat().st_size > 5000
    rows = {row["name"]: row for row in board["rows"]}
    for name in ("ssmamba", "test_convnext"):
        cells = _cells(out, name)
        per_seed = [cells[s]["test"]["x1"]["balanced_accuracy"] for s in (0, 1)]
        summary = rows[name]["metrics"]["balanced_accuracy"]
        assert summary["mean"] == pytest.approx(np.mean(per_seed))
        assert summary["std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert summary["ci95"][0] <= summary["ci95"][1]
        assert set(cells[0]["test"]) == {"x1", "x0.5", "x2"}
    assert rows["ssmamba"]["cost"]["pretrain_cpu_min"] > 0 and rows["test_convnext"]["cost"]["pretrain_cpu_min"] == 0
    paired = rows["ssmamba"]["paired"]
    expected = [rows["ssmamba"]["metrics"]["balanced_accuracy"]["per_seed"][s]
                - rows["test_convnext"]["metrics"]["balanced_accuracy"]["per_seed"][s] for s in ("0", "1")]
    assert paired["per_seed_diff"] == pytest.approx(expected)
    markdown = (out / "leaderboard.md").read_text()
    assert "| 1 | **" in markdown and "Paired comparison with the best baseline, `test_convnext`" in markdown
    assert "ssmamba benchmark --data" in markdown  # the exact command is recorded

    # a third seed: the four finished cells are reused untouched, only the two new ones run
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed_*/result.json")}
    args = [a if a != "0,1" else "0,1,2" for a in TINY]
    result = CliRunner().invoke(main, ["benchmark", "--data", str(tiny_data), "--out", str(out), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "6 cells (2 entries x 3 seeds), 4 finished already and reused" in (out / "benchmark.log").read_text()
    assert json.loads((out / "leaderboard.json").read_text())["n_cells"]["done"] == 6

    # --report-only computes nothing: a fourth seed shows up as missing cells
    args = [a if a != "0,1" else "0,1,2,3" for a in TINY]
    result = CliRunner().invoke(main, ["benchmark", "--data", str(tiny_data), "--out", str(out), *args,
                                       "--report-only"], catch_exceptions=False)
    assert result.exit_code == 0 and "6 of 8 cells" in result.output
    assert not list(out.glob("cells/*/seed_3"))

    # the same folder with another recipe is refused, naming what changed
    args = [a if a != "--epochs" else "--epochs" for a in TINY]
    args[args.index("--epochs") + 1] = "2"
    result = CliRunner().invoke(main, ["benchmark", "--data", str(tiny_data), "--out", str(out), *args])
    assert result.exit_code == 1 and "epochs" in result.output and "new --out" in result.output


def test_a_killed_benchmark_recomputes_no_finished_cell(tiny_data, tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "ssmamba", "benchmark", "--data", str(tiny_data), "--out", str(out), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:  # blocks on the log, no polling: kill as soon as the first cell is reported done
        if "cell 1/4 done" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = list(out.glob("cells/*/seed_*/result.json"))
    assert len(finished) == 1
    before = (finished[0].read_bytes(), finished[0].stat().st_mtime_ns)
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (finished[0].read_bytes(), finished[0].stat().st_mtime_ns) == before
    assert "1 finished already and reused" in rerun.stderr
    assert json.loads((out / "leaderboard.json").read_text())["n_cells"]["done"] == 4


def test_an_entry_trains_at_its_own_learning_rate(tiny_data, tmp_path):
    """``--entry-lr NAME=LR`` changes that entry's cells only; the leaderboard and the recorded command say so."""
    from ssmamba.workflows.benchmark.runner import BenchmarkConfig

    cfg = BenchmarkConfig(data="d.csv", entries=("ssmamba", "ssmamba-mamim", "resnet18"),
                          entry_lr={"ssmamba_mamim": "3e-3"})  # option keys arrive with "_" for "-"
    assert cfg.entry_lr == {"ssmamba-mamim": 0.003}
    assert (cfg.lr_of("ssmamba"), cfg.lr_of("ssmamba-mamim")) == (1e-3, 0.003)
    assert cfg.cell_recipe({"lr": 1e-3, "epochs": 3}, "ssmamba-mamim") == {"lr": 0.003, "epochs": 3}
    with pytest.raises(ValueError, match="'resnet50' is not one of the entries"):
        BenchmarkConfig(data="d.csv", entries=("ssmamba", "resnet18"), entry_lr={"resnet50": 0.01})
    with pytest.raises(ValueError, match="must be > 0"):
        BenchmarkConfig(data="d.csv", entries=("resnet18",), entry_lr={"resnet18": 0})

    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_data), "--out", str(out), "--entries", "ssmamba-mamim,test_convnext",
            "--seeds", "0", "--backbone", "ssmamba_test", "--img-size", "32", "--epochs", "1", "--batch-size", "16",
            "--bootstrap", "10", "--no-progress", "--entry-lr", "test_convnext=0.02"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recipes = {name: json.loads((out / "cells" / name / "seed_0" / "cell.json").read_text())["recipe"]
               for name in ("ssmamba-mamim", "test_convnext")}
    assert (recipes["ssmamba-mamim"]["lr"], recipes["test_convnext"]["lr"]) == (1e-3, 0.02)
    assert {k: v for k, v in recipes["ssmamba-mamim"].items() if k != "lr"} == \
        {k: v for k, v in recipes["test_convnext"].items() if k != "lr"}
    config = (out / "cells" / "test_convnext" / "seed_0" / "finetune" / "config.yaml").read_text()
    assert re.search(r"\blr: 0\.02\b", config)  # what the run trained with, not only what the cell says
    board = json.loads((out / "leaderboard.json").read_text())
    assert {row["name"]: row["lr"] for row in board["rows"]} == {"ssmamba-mamim": 1e-3, "test_convnext": 0.02}
    markdown = (out / "leaderboard.md").read_text()
    assert "AdamW lr 0.001, except `test_convnext` 0.02 (each entry's own rate, chosen on validation)" in markdown
    assert "--entry-lr test_convnext=0.02" in markdown  # the command that reproduces the board
    # rerun: the finished cells match their keys (the entry's rate is part of its cells' recipe) and are reused
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "2 finished already and reused" in (out / "benchmark.log").read_text()
    # a changed rate for one entry is refused like any other recipe change
    result = CliRunner().invoke(main, args[:-1] + ["test_convnext=0.03"])
    assert result.exit_code == 1 and "lr" in result.output


def test_a_cell_held_by_a_live_process_is_skipped_and_a_stale_lock_taken_over(tmp_path):
    cell = Cell(tmp_path / "cell", parse_entry("resnet18"), 0, "data.csv", {})
    cell.root.mkdir()
    lock = cell.root / ".lock"
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))  # a live process
    with pytest.raises(CellBusy):
        cell.acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))  # gone
    cell.acquire()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    cell.release()
    assert not lock.exists()


def _fake_cell(seed: int, accuracy: float, probs: np.ndarray, labels: np.ndarray) -> tuple:
    scalars = {"accuracy": accuracy, "balanced_accuracy": accuracy, "macro_f1": accuracy, "weighted_f1": accuracy,
               "auroc": accuracy}
    result = {"test": {"x1": scalars, "x0.5": scalars}, "params_m": 1.0, "cpu_s": {"pretrain": 60.0, "finetune": 120.0},
              "inference_img_s": 100.0, "threads": 1}
    return seed, result, {"labels": labels, "probs_x1": probs}


def test_leaderboard_statistics_are_those_of_the_seeds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    good = np.eye(2)[np.where(rng.random(200) < 0.9, labels, 1 - labels)]
    poor = np.eye(2)[np.where(rng.random(200) < 0.7, labels, 1 - labels)]
    ours = _entry_row(parse_entry("ssmamba"), [_fake_cell(s, a, good, labels) for s, a in ((0, .90), (1, .86), (2, .88))],
                      (0.5,), n_bootstrap=300)
    base = _entry_row(parse_entry("resnet18"), [_fake_cell(s, a, poor, labels) for s, a in ((0, .70), (1, .75), (2, .71))],
                      (0.5,), n_bootstrap=300)
    summary = ours["metrics"]["accuracy"]
    assert summary["mean"] == pytest.approx(0.88) and summary["std"] == pytest.approx(0.02)
    low, high = summary["ci95"]
    observed = (good.argmax(1) == labels).mean()
    assert low < observed < high and high - low < 0.15
    assert ours["cost"]["total_cpu_min"] == pytest.approx(3.0)
    paired = _paired(ours, base, "accuracy")
    assert paired["per_seed_diff"] == pytest.approx([0.20, 0.11, 0.17])
    assert paired["mean_diff"] == pytest.approx(0.16)
    assert paired["wilcoxon_p"] == pytest.approx(stats.wilcoxon([0.20, 0.11, 0.17]).pvalue) == pytest.approx(0.25)
    assert paired["sign_p"] == pytest.approx(0.25)
    assert paired["ci95"][0] > 0  # the same resampled test sets: the better model wins in nearly all of them


def test_the_gpu_recipe_runs_on_the_cpu_at_a_tiny_setting(tiny_data, tmp_path):
    """benchmarks/gpu_benchmark.sh with its knobs turned down: two processes share the cells of one data set and
    the leaderboard lands in RESULTS under the data set's name."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_benchmark.sh"
    env = {**os.environ, "DATASETS": f"tiny={tiny_data}", "ENTRIES": "ssmamba,test_convnext", "SEEDS": "0",
           "JOBS": "2", "DEVICE": "cpu", "OUT": str(tmp_path / "runs"), "RESULTS": str(tmp_path / "results"),
           "OMP_NUM_THREADS": "1",
           "EXTRA": "--backbone ssmamba_test --img-size 32 --epochs 1 --pretrain-epochs 1 --batch-size 16 "
                    "--bootstrap 50 --num-workers 0 --threads 1"}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    board = json.loads((tmp_path / "results" / "leaderboard_tiny_gpu.json").read_text())
    assert board["n_cells"] == {"done": 2, "total": 2}
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "tiny").glob("job*.log"))
    assert len(re.findall(r"cell \d/2 done:", logs)) == 2  # each cell computed once, by one of the two processes


def test_every_benchmark_option_is_documented():
    from ssmamba.cli.benchmark import benchmark

    assert [p.name for p in benchmark.params if not getattr(p, "help", None)] == []
    text = CliRunner().invoke(main, ["benchmark", "--help"]).output
    for option in ("--entries", "--seeds", "--epochs", "--pretrain-epochs", "--magnifications", "--max-val"):
        assert option in text


def test_committed_cell_records_round_trip(tmp_path):
    """benchmarks/leaderboards.py keeps finished cells as text (no binaries) and rebuilds them in a fresh folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "leaderboards", Path(__file__).resolve().parents[2] / "benchmarks" / "leaderboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cell = tmp_path / "run" / "resnet18" / "seed_0"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text('{"seed": 0}')
    (cell / "result.json").write_text('{"test": {"x1": {}}}')
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], 50).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 3, 50)
    np.savez_compressed(cell / "predictions.npz", labels=labels, probs_x1=probs, probs_x2=probs)
    (tmp_path / "run" / "resnet18" / "seed_1").mkdir()  # unfinished: no result.json, not kept
    module.sync_cells(tmp_path / "run", tmp_path / "committed", export=True)
    kept = sorted(p.relative_to(tmp_path / "committed").as_posix() for p in (tmp_path / "committed").rglob("*.*"))
    assert kept == ["resnet18/seed_0/cell.json", "resnet18/seed_0/predictions.csv", "resnet18/seed_0/result.json"]
    module.sync_cells(tmp_path / "committed", tmp_path / "fresh", export=False)
    back = np.load(tmp_path / "fresh" / "resnet18" / "seed_0" / "predictions.npz")
    np.testing.assert_array_equal(back["labels"], labels)
    np.testing.assert_allclose(back["probs_x1"], probs, atol=5e-5)
    assert (tmp_path / "fresh" / "resnet18" / "seed_0" / "result.json").read_text() == '{"test": {"x1": {}}}'


def test_a_cell_from_before_entries_recorded_their_architecture_is_reused_only_for_that_architecture(tmp_path):
    """Entries record their whole architecture, so a changed variant default is never read from an older cell."""
    from ssmamba.workflows.benchmark.cells import RecipeMismatchError
    from ssmamba.workflows.benchmark.entries import saved_entry

    def cell(**backbone_args):
        return Cell(tmp_path / "cell", parse_entry("ssmamba-lpr", "ssmamba_test", backbone_args), 0, "d.csv", {})

    key = cell().key
    del key["entry"]["architecture"]  # as cells were written before
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "cell.json").write_text(json.dumps(key))
    assert saved_entry(key["entry"])["architecture"]["conv_block"] == "inverted"  # what those cells were built with
    cell(conv_block="inverted").check_key()
    with pytest.raises(RecipeMismatchError, match="another recipe"):
        cell(conv_block="dense").check_key()
    assert "architecture" not in parse_entry("resnet18").to_dict()
