"""`finetune`: learns a small task, keeps the best checkpoint with class names, resumes, and stops on NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trainer_hooks import poison_loss_from_epoch, record_bf16_autocast

from ssmamba import create_model, save_pretrained
from ssmamba.train.engine import NonFiniteLossError
from ssmamba.train.finetune import (Balancing, FinetuneConfig, FinetuneTrainer, finetune,
                                    with_recalibrated_batch_norm)
from ssmamba.train.optim import class_weights


def _config(data, out, **kw) -> FinetuneConfig:
    base = dict(data=str(data), out=str(out), model="ssmamba_test", img_size=32, crop_size=32, epochs=3,
                batch_size=8, lr=3e-3, seed=0, patience=0, hed=False)
    return FinetuneConfig(**{**base, **kw})


def test_finetune_keeps_best_checkpoint_with_classes(image_folder, tmp_path):
    best = finetune(_config(image_folder, tmp_path / "run"), progress=False)
    config = json.loads((best / "config.json").read_text())
    assert config["pretrained_cfg"]["class_names"] == ["benign", "tumour"]
    assert config["num_classes"] == 2
    model = create_model(checkpoint=best)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    run = tmp_path / "run"
    assert (run / "curves.png").is_file() and (run / "last" / "model.safetensors").is_file()
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history if "val_balanced_accuracy" in row] == [1, 2, 3]


def test_finetune_from_a_pretrained_encoder_with_options(image_folder, tmp_path, monkeypatch):
    """EMA, class-balanced sampling and layer-wise LR decay each do what they say, seen from outside the run."""
    import shutil

    from safetensors.torch import load_file

    from ssmamba.train import finetune as finetune_module
    from ssmamba.train.engine import STATE_NAME

    data = tmp_path / "imbalanced"
    shutil.copytree(image_folder, data)
    for extra in sorted((data / "tumour").glob("*.png"))[4:]:  # 13 benign images, 4 tumour
        extra.unlink()
    loaders = []
    original_make_loader = finetune_module.make_loader
    monkeypatch.setattr(finetune_module, "make_loader",
                        lambda *a, **k: loaders.append(original_make_loader(*a, **k)) or loaders[-1])
    encoder = create_model("ssmamba_test", num_classes=0)
    encoder_dir = save_pretrained(encoder, tmp_path / "encoder")
    run = tmp_path / "run"
    best = finetune(_config(data, run, init=str(encoder_dir), ema=True, ema_decay=0.9,
                            balance=Balancing.SAMPLER, layer_decay=0.7, epochs=2), progress=False)
    assert best == run / "best"

    # sampler: weights inverse to the class frequency, so an epoch draws both classes about equally
    sampler = loaders[0].sampler
    labels = np.asarray([label for _, label in loaders[0].dataset.dataset])
    weights = sampler.weights.numpy()
    assert len(set(labels.tolist())) == 2 and (labels == 1).sum() < (labels == 0).sum() / 2
    totals = [weights[labels == k].sum() for k in (0, 1)]
    assert totals[0] == pytest.approx(totals[1])
    drawn = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        drawn.append(labels[sampler.order()])
    drawn = np.concatenate(drawn)
    assert abs((drawn == 1).mean() - 0.5) < 0.05

    # layer-wise LR decay: one rate per depth, 0.7 ** k below the head's
    state = torch.load(run / STATE_NAME, weights_only=False)
    scales = sorted({round(g["lr_scale"], 9) for g in state["optimizer"]["param_groups"]})
    assert scales[-1] == 1.0 and len(scales) > 3
    assert scales == pytest.approx([0.7 ** k for k in range(len(scales))][::-1])

    # EMA: the saved model has the averaged weights (norm statistics re-estimated), not the last raw weights
    saved = load_file(str(run / "last" / "model.safetensors"))
    ema = torch.load(run / "ema_state.pt", weights_only=True)
    raw = state["model"]
    parameters = [n for n, _ in create_model("ssmamba_test", num_classes=2).named_parameters()]
    for name in parameters:
        torch.testing.assert_close(saved[name], ema[f"module.{name}"], msg=name)
    assert any(not torch.allclose(saved[name], raw[name]) for name in parameters)


def test_an_ema_model_gets_batch_norm_statistics_of_its_own_weights_on_a_copy():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten(), torch.nn.Linear(48, 2))
    shift, scale = torch.tensor([5.0, -1.0, 0.0]), torch.tensor([1.0, 2.0, 3.0])
    images = torch.randn(40, 3, 4, 4) * scale[:, None, None] + shift[:, None, None]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(40)), batch_size=8)
    rng = torch.get_rng_state()
    copied = with_recalibrated_batch_norm(model, loader, torch.device("cpu"), batches=3)
    batches = images[:24].view(3, 8, 3, 4, 4)  # only the first 3 batches are read
    bn = copied[0]
    torch.testing.assert_close(bn.running_mean, batches.mean((1, 3, 4)).mean(0))
    torch.testing.assert_close(bn.running_var, batches.transpose(1, 2).reshape(3, 3, -1).var(-1).mean(0))
    assert torch.equal(model[0].running_mean, torch.zeros(3)) and model[0].momentum == 0.1  # original untouched
    assert not copied.training and torch.equal(torch.get_rng_state(), rng)


def test_early_stopping(image_folder, tmp_path):
    finetune(_config(image_folder, tmp_path / "run", epochs=8, patience=1, lr=0.0), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert max(row["epoch"] for row in history) < 8  # a frozen model never improves after epoch 1


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(image_folder, tmp_path, monkeypatch):
    poison_loss_from_epoch(monkeypatch, FinetuneTrainer, 1)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step \d+ \(epoch 1\).*training_state.pt"):
        finetune(_config(image_folder, tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "training_state.pt").is_file()


def test_class_weights_are_inverse_frequency():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights[0] < weights[1] and weights[2] == 0
    torch.testing.assert_close(weights[:2] * torch.tensor([3.0, 1.0]), torch.full((2,), weights[1].item()))


def test_bf16_precision_runs_the_forward_under_autocast(image_folder, tmp_path, monkeypatch):
    seen = record_bf16_autocast(monkeypatch, FinetuneTrainer)
    finetune(_config(image_folder, tmp_path / "run", epochs=1, precision="bf16"), progress=False)
    assert seen and all(seen)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "precision: bf16" in saved
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(row["loss"]) for row in history if "loss" in row)


@pytest.mark.gpu
def test_finetune_and_pretrain_on_a_gpu(image_folder, tmp_path):
    from ssmamba.train.pretrain import PretrainConfig, pretrain

    encoder = pretrain(PretrainConfig(data=str(image_folder), out=str(tmp_path / "pre"), model="ssmamba_test",
                                      img_size=32, crop_size=32, mask_patch_size=8, epochs=1, batch_size=8,
                                      device="cuda", precision="bf16"), progress=False)
    best = finetune(_config(image_folder, tmp_path / "run", init=str(encoder), epochs=2, device="cuda",
                            ema=True, balance=Balancing.LOSS), progress=False)
    model = create_model(checkpoint=best)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def _image_sources(tmp_path):
    """The same kind of 48-px tissue images as a class folder, a CSV manifest and nucleus points (crops of 40)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "folder"
    rows, points = [], []
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            path = folder / label / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
            rows.append(f"{path},{label},{'train' if i < 4 else 'val'}")
            points.append(f"{path},{label},{'train' if i < 4 else 'val'},24,24")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    nuclei = tmp_path / "nuclei.csv"
    nuclei.write_text("image,label,split,x,y\n" + "\n".join(points) + "\n")
    return {"folder": (folder, 48), "manifest": (manifest, 48), "points": (nuclei, 40)}


@pytest.mark.parametrize("kind", ["folder", "manifest", "points"])
def test_training_views_are_on_average_at_the_evaluation_scale(tmp_path, kind):
    """The field of view is defined once: evaluation shows each image whole at img_size, and the training crops'
    zooms are drawn about that zoom, so their mean (log) scale equals it, for every kind of data."""
    from ssmamba.data import load_dataset
    from ssmamba.data.transforms import FieldOfView, MultiScaleCrop

    source, native = _image_sources(tmp_path)[kind]
    train = load_dataset(source, "train", None, crop_size=40)
    view = FieldOfView.of(train, 32, (0.8, 1.25))
    assert view.native_side == native and view.eval_zoom == pytest.approx(32 / native)
    crop = MultiScaleCrop(32, view.train_zoom, pad_out=True)
    image = train[0][0]
    zooms = [32 / crop.make_params([image])["side"] for _ in range(3000)]
    assert np.exp(np.mean(np.log(zooms))) == pytest.approx(view.eval_zoom, rel=0.02)
    assert crop(image).size == (32, 32)

    run = finetune(_config(source, tmp_path / "run", crop_size=40, epochs=1, zoom_min=0.8, zoom_max=1.25),
                   progress=False)
    saved = create_model(checkpoint=run).pretrained_cfg
    assert saved["native_side"] == native and saved["eval_zoom"] == pytest.approx(32 / native)
    assert f"median short side {native} px) at 32 px" in (tmp_path / "run" / "log.txt").read_text()
