"""`mil train` on the shared training engine: a killed run resumes to the same heads and out-of-fold predictions,
a NaN loss stops it with a message and keeps the last good training state, and bf16 trains under autocast."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from trainer_hooks import before_each_loss, poison_loss_from_epoch, record_bf16_autocast

from ssmamba.cli import main
from ssmamba.mil import create_mil_head
from ssmamba.mil.bags import BagDataset, read_bag_table
from ssmamba.mil.training import MILTrainConfig, MILTrainer, train_head
from ssmamba.train.engine import STATE_NAME


def _train_args(bag_folder, out, *extra) -> list[str]:
    table, features = bag_folder
    # subsampling (bags have 10-20 instances), dropout in the head and selection on a validation part all draw
    # from or depend on what a resumed run must restore; at this high rate the validation loss of fold 1 is lowest
    # after epoch 2 of 4, so the selected weights are those a resumed run finds in the state it continues from
    return ["mil", "train", "--csv", str(table), "--features", str(features), "--head", "abmil",
            "--head-args", "hidden_dim=16", "--folds", "3", "--epochs", "4", "--lr", "0.1", "--max-instances", "12",
            "--val-fraction", "0.25", "--bootstrap", "20", "--no-progress", "--device", "cpu", "--out", str(out),
            *extra]


def test_a_killed_mil_run_resumes_to_the_same_heads_and_predictions(bag_folder, tmp_path, monkeypatch):
    runner = CliRunner()
    straight = runner.invoke(main, _train_args(bag_folder, tmp_path / "straight"))
    assert straight.exit_code == 0, straight.output

    history = json.loads((tmp_path / "straight" / "fold_1" / "history.json").read_text())
    assert max(row["epoch"] for row in history if row.get("selected")) <= 2  # what this test relies on

    def interrupt(trainer):  # the process dies in the last epoch of fold 1, after that fold's third state
        if trainer.out_dir.name == "fold_1" and trainer.state.step == 3 * trainer.steps_per_epoch + 2:
            raise KeyboardInterrupt

    before_each_loss(monkeypatch, MILTrainer, interrupt)
    out = tmp_path / "resumed"
    killed = runner.invoke(main, _train_args(bag_folder, out))
    assert killed.exit_code != 0
    monkeypatch.undo()
    assert (out / "fold_0" / "mil_config.json").is_file() and not (out / "fold_0" / STATE_NAME).exists()
    state = torch.load(out / "fold_1" / STATE_NAME, weights_only=True)
    assert state["run"]["epoch"] == 2 and state["run"]["step"] == 3 * state["layout"]["steps_per_epoch"]
    assert "best_weights" in state["extras"]
    assert not (out / "fold_1" / "mil_config.json").exists() and not (out / "fold_2").exists()
    refused = runner.invoke(main, _train_args(bag_folder, out))
    assert refused.exit_code != 0 and "--resume" in refused.output

    steps = []
    before_each_loss(monkeypatch, MILTrainer, lambda trainer: steps.append((trainer.out_dir.name, trainer.state.step)))
    resumed = runner.invoke(main, _train_args(bag_folder, out, "--resume"))
    monkeypatch.undo()
    assert resumed.exit_code == 0, resumed.output
    # fold 0 was not trained again, fold 1 went on from its state at the end of epoch 3
    assert {fold for fold, _ in steps} == {"fold_1", "fold_2"}
    assert min(step for fold, step in steps if fold == "fold_1") == state["run"]["step"]
    for k in range(3):
        a, b = (load_file(str(run / f"fold_{k}" / "mil_model.safetensors")) for run in (tmp_path / "straight", out))
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"fold {k}: {name}")
        for name in ("predictions.csv", "history.json"):
            assert (out / f"fold_{k}" / name).read_text() == (tmp_path / "straight" / f"fold_{k}" / name).read_text()
        assert not (out / f"fold_{k}" / STATE_NAME).exists()  # a finished fold keeps its head, not its state
    history = json.loads((out / "fold_1" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4] and all("val_loss" in row for row in history)
    summaries = [json.loads((run / "cv_summary.json").read_text()) for run in (tmp_path / "straight", out)]
    assert summaries[0]["pooled_out_of_fold"] == summaries[1]["pooled_out_of_fold"]
    assert summaries[0]["folds"] == summaries[1]["folds"]


def test_a_nan_loss_stops_mil_training_with_a_message_and_keeps_the_last_state(bag_folder, tmp_path, monkeypatch):
    poison_loss_from_epoch(monkeypatch, MILTrainer, 1)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, _train_args(bag_folder, out))
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: loss became nan at step") and "(epoch 1)" in line
    assert str(out / "fold_0" / STATE_NAME) in line
    state = torch.load(out / "fold_0" / STATE_NAME, weights_only=True)  # the state after the last good epoch
    assert state["run"]["epoch"] == 0 and state["run"]["step"] == state["layout"]["steps_per_epoch"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bf16_trains_the_head_under_autocast_and_keeps_float32_weights(bag_folder, monkeypatch):
    seen = record_bf16_autocast(monkeypatch, MILTrainer)
    dataset = BagDataset(read_bag_table(*bag_folder).records[:6])
    head = create_mil_head("abmil", 8, 2, hidden_dim=16)
    history = train_head(head, dataset, MILTrainConfig(epochs=2, precision="bf16"), progress=False)
    assert len(seen) == 12 and all(seen)
    assert [row["epoch"] for row in history] == [1, 2] and all(p.dtype == torch.float32 for p in head.parameters())
    with pytest.raises(ValueError, match="'fp16' is not a valid Precision"):
        MILTrainConfig(precision="fp16")


def test_class_weights_scale_each_bags_loss(bag_folder, tmp_path):
    """With one bag per step, --balance loss multiplies a bag's loss by its class's inverse-frequency weight (a
    weighted mean over a one-bag batch would divide the weight out again, leaving balancing without effect)."""
    from ssmamba.mil.training import _trainer

    records = read_bag_table(*bag_folder).records
    labels = [r.label for r in records]
    minority = min(set(labels), key=labels.count)
    dataset = BagDataset([r for r in records if r.label != minority][:6] + [r for r in records
                                                                         if r.label == minority][:2])
    losses = {}
    for balance in (False, True):
        torch.manual_seed(0)
        head = create_mil_head("abmil", 8, 2, hidden_dim=16, dropout=0.0)
        trainer = _trainer(head, dataset, MILTrainConfig(balance_classes=balance), None, tmp_path / str(balance),
                           False)
        features, coords, label = dataset[len(dataset) - 1][:3]  # a bag of the minority class
        batch = features[None], None if coords is None else coords[None], torch.tensor([label])
        losses[balance] = trainer.compute_loss(batch)
    assert label == minority
    # 8 bags, 2 of the minority class: its weight is 8 / 2 / 2 classes = 2
    torch.testing.assert_close(losses[True], 2.0 * losses[False])
