"""`mil train` data-parallel under torchrun (gloo, 2 CPU processes): the same heads as one process with the same
global batch, exact resume after a kill, and a clear error when the number of processes changes on resume.

One bag is one micro-batch (bags differ in size), so a step of N processes holds N bags: process ``r`` takes the
bags at positions ``r, N + r, 2N + r, ...`` of the epoch's one seeded order (``EpochSampler`` with batch size 1),
which are the bags one process groups into the same step with ``--accum-steps N``. Subsampling and instance
dropout are drawn per (seed, epoch, bag), wherever the bag is read. DDP averages the processes' gradients, and
accumulation scales each bag's loss by 1 / N; for N = 2 both make the same float32 sum ``g0 / 2 + g1 / 2`` (halving
is exact), validation and test predictions are gathered in bag order, and the feature statistics are summed in bag
order: so the weights, predictions and metrics are identical, and are compared exactly. The match holds when

- the number of training bags of every fold is a multiple of N: otherwise the processes' last step is filled up
  with bags from the start of the epoch's order (every process takes the same number of steps), where one process
  takes a smaller last step (asserted below from ``split.json``);
- the head has no dropout: each process draws its own masks (like drop-path in ``tests/train/test_distributed.py``);
- N is a power of 2; otherwise the 1 / N scalings round, and the weights agree to float32 round-off only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ssmamba.cli import main
from ssmamba.train.engine import STATE_NAME

# rank 0 is killed (SIGKILL) as it starts the 8th step of fold 1, in its third epoch (3 steps of 2 bags each),
# after the training state of its second; torchrun then stops rank 1
_KILL_IN_FOLD_1 = """
import os, signal
import ssmamba.train.engine as engine
real = engine.Trainer._train_step
def _train_step(self, batches):
    if self.out_dir.name == "fold_1" and self.state.step == 7 and self.job.rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batches)
engine.Trainer._train_step = _train_step
"""


def _args(bag_folder, out: Path, *extra) -> list[str]:
    table, features = bag_folder
    # 2 folds of 12 test bags, each fold's 12 others halved into 6 training and 6 validation bags; subsampling
    # (bags have 10-20 instances) and selection on the validation loss take part, dropout does not (see above)
    return ["mil", "train", "--csv", str(table), "--features", str(features), "--head", "abmil",
            "--head-args", "hidden_dim=16", "--head-args", "dropout=0", "--folds", "2", "--epochs", "3", "--lr", "0.05",
            "--max-instances", "12", "--val-fraction", "0.5", "--bootstrap", "20", "--no-progress", "--device", "cpu",
            "--out", str(out), *extra]


def _assert_same_run(a: Path, b: Path) -> None:
    """The same heads (bit for bit), predictions, histories and metrics in two run folders."""
    for k in range(2):
        weights = [load_file(str(run / f"fold_{k}" / "mil_model.safetensors")) for run in (a, b)]
        assert weights[0].keys() == weights[1].keys()
        for name in weights[0]:
            torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=f"fold {k}: {name}")
        for name in ("predictions.csv", "history.json", "metrics.json"):
            assert (a / f"fold_{k}" / name).read_text() == (b / f"fold_{k}" / name).read_text(), name
    summaries = [json.loads((run / "cv_summary.json").read_text()) for run in (a, b)]
    assert summaries[0]["pooled_out_of_fold"] == summaries[1]["pooled_out_of_fold"]
    assert summaries[0]["folds"] == summaries[1]["folds"]


@pytest.fixture(scope="module")
def straight(module_bag_folder, tmp_path_factory, torchrun):
    """An uninterrupted 2-process run: (its folder, torchrun's result)."""
    root = tmp_path_factory.mktemp("mil_ddp")
    result = torchrun(root, *_args(module_bag_folder, root / "straight"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "straight", result


def test_two_process_mil_training_writes_one_run_and_matches_one_process(module_bag_folder, straight, tmp_path):
    out, result = straight
    lines = result.stdout.splitlines()  # rank 0 alone prints the table and the summary
    assert lines.count("## Pooled out-of-fold") == 1 and sum(line.startswith("24 bags from") for line in lines) == 1
    log = (out / "log.txt").read_text()  # rank 0's log: one line per fold and per epoch, not one per process
    assert log.count("2 process(es) x 1 bags x 1 accumulation step(s) = 2 bags per step, 9 steps") == 2
    assert log.count("step 9/9") == 2
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["settings"]["processes"] == 2 and summary["pooled_out_of_fold"]["n"] == 24
    for k in range(2):
        fold = out / f"fold_{k}"
        split = json.loads((fold / "split.json").read_text())
        assert len(split["train"]) % 2 == 0  # what the exact match relies on (see the module docstring)
        config = json.loads((fold / "mil_config.json").read_text())
        assert (config["processes"], config["accum_steps"]) == (2, 1)
        assert len((fold / "predictions.csv").read_text().splitlines()) == 1 + 12  # every test bag, once
        # the validation loss is the whole validation split's: the epochs selected are those of one process
        assert not (fold / STATE_NAME).exists() and len(json.loads((fold / "history.json").read_text())) == 3
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))

    single = tmp_path / "single"
    result = CliRunner().invoke(main, _args(module_bag_folder, single, "--accum-steps", "2"))
    assert result.exit_code == 0, result.output
    assert "1 process(es) x 1 bags x 2 accumulation step(s) = 2 bags per step, 9 steps" in \
        (single / "log.txt").read_text()
    _assert_same_run(out, single)


@pytest.mark.slow  # about 30 s: two more torchrun jobs and three in-process runs
def test_a_killed_two_process_run_resumes_exactly_and_refuses_another_world_size(module_bag_folder, straight,
                                                                                 tmp_path, torchrun):
    args = _args(module_bag_folder, tmp_path / "killed")
    out = tmp_path / "killed"
    killed = torchrun(tmp_path, *args, prelude=_KILL_IN_FOLD_1)
    assert killed.returncode != 0
    assert (out / "fold_0" / "mil_config.json").is_file()
    state = torch.load(out / "fold_1" / STATE_NAME, weights_only=True)
    assert state["run"]["step"] == 6 and state["layout"] == {"world_size": 2, "images_per_step": 2,
                                                              "steps_per_epoch": 3}

    # one process cannot silently continue a 2-process run: neither its finished folds ...
    runner = CliRunner()
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    refused = runner.invoke(main, _args(module_bag_folder, copy, "--resume"))
    assert refused.exit_code == 1
    line = refused.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and str(copy / "fold_0" / "mil_config.json") in line
    assert "trained by 2 process(es) with --accum-steps 1, and this run has 1 with 1" in line and "--reshard" in line
    # ... nor the training state of the interrupted one (here fold 0 trains again first, with one process)
    without_fold_0 = Path(shutil.copytree(out, tmp_path / "without_fold_0"))
    shutil.rmtree(without_fold_0 / "fold_0")
    refused = runner.invoke(main, _args(module_bag_folder, without_fold_0, "--resume"))
    line = refused.output.strip().splitlines()[-1]
    assert refused.exit_code == 1 and line.startswith(f"Error: {without_fold_0 / 'fold_1' / STATE_NAME} was saved")
    assert "2 process(es) with 2 bags per step, and this run has 1 with 1" in line and "--accum-steps" in line
    assert "--batch-size" not in line
    assert "--reshard only applies to --resume" in runner.invoke(main, _args(module_bag_folder, copy, "--reshard")).output
    # ... but it can re-shard: the end of epoch 2 of 3 steps of 2 bags is step 12 of 18 steps of 1 bag
    resharded = runner.invoke(main, _args(module_bag_folder, copy, "--resume", "--reshard"))
    assert resharded.exit_code == 0, resharded.output
    log = (copy / "log.txt").read_text()
    assert "re-sharded" in log and "continuing at step 12 of 18" in log
    assert json.loads((copy / "fold_1" / "history.json").read_text())[-1]["epoch"] == 3

    resumed = torchrun(tmp_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (out / "log.txt").read_text()
    _assert_same_run(straight[0], out)
