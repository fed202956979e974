"""`pretrain`: a run on a messy folder completes, reports skips, writes checkpoints, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from ssmamba import create_model
from ssmamba.train.pretrain import PretrainConfig, PretrainTrainer, pretrain


def _config(data, out, **kw) -> PretrainConfig:
    base = dict(data=str(data), out=str(out), model="ssmamba_test", img_size=32, crop_size=32, mask_patch_size=8,
                epochs=2, batch_size=8, checkpoint_every=0, seed=1)
    return PretrainConfig(**{**base, **kw})


def test_pretrain_on_a_messy_folder(image_folder, tmp_path, caplog):
    checkpoint = pretrain(_config(image_folder, tmp_path / "run"), progress=False)
    encoder = create_model(checkpoint=checkpoint)
    assert encoder(torch.randn(1, 3, 32, 32)).shape == (1, encoder.num_features)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["pretrained_cfg"]["pretraining"] == "mamim"
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "loss.png").is_file()
    assert list(run.glob("reconstruction_*.png"))
    log = (run / "log.txt").read_text()
    assert "corrupt.png" in log  # the skipped file is named in the run log
    # the field of view is stated at the start (issue 17): 32 px views at zoom 0.25-1 cover 32-128 native px
    assert "field of view: MAMIM views of 32 px, each 32-128 native px across (zoom 0.25-1 of native" in log


def test_resume_gives_the_same_weights_as_a_straight_run(image_folder, tmp_path, monkeypatch):
    straight = pretrain(_config(image_folder, tmp_path / "straight", epochs=3, checkpoint_every=2), progress=False)

    original = PretrainTrainer.compute_loss

    def interrupted(self, batch):  # the process dies in the middle of epoch 2, after a checkpoint at step 4
        if self.state.step == 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(PretrainTrainer, "compute_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(image_folder, tmp_path / "resumed", epochs=3, checkpoint_every=2), progress=False)
    monkeypatch.undo()
    assert torch.load(tmp_path / "resumed" / "training_state.pt", weights_only=False)["run"]["step"] == 4
    resumed = pretrain(_config(image_folder, tmp_path / "resumed", epochs=3, checkpoint_every=2), resume=True,
                       progress=False)
    a, b = create_model(checkpoint=straight).state_dict(), create_model(checkpoint=resumed).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_bf16_pretraining_saves_a_float32_encoder(image_folder, tmp_path):
    checkpoint = pretrain(_config(image_folder, tmp_path / "run", precision="bf16", epochs=1), progress=False)
    encoder = create_model(checkpoint=checkpoint)
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert "precision: bf16" in (tmp_path / "run" / "config.yaml").read_text()
