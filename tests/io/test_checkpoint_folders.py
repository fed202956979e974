"""One checkpoint-folder writer and reader (ssmamba.io.pretrained) behind backbones and MIL heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssmamba.errors import CheckpointError
from ssmamba.io import pretrained as checkpoint_folder
from ssmamba.io.pretrained import load_pretrained, read_config, save_pretrained


def test_save_then_load_gives_back_the_tensors_and_the_config_with_the_version(tmp_path):
    from ssmamba._version import __version__

    state = {"w": torch.arange(6.0).view(2, 3), "step": torch.tensor(7)}
    folder = save_pretrained(tmp_path / "ckpt", state, {"head": "x", "sizes": (1, 2)}, weights_name="w.safetensors",
                             config_name="c.json")
    config, loaded = load_pretrained(folder, weights_name="w.safetensors", config_name="c.json")
    assert config == {"head": "x", "sizes": [1, 2], "ssmamba_version": __version__}
    assert torch.equal(loaded["w"], state["w"]) and int(loaded["step"]) == 7
    assert sorted(p.name for p in folder.iterdir()) == ["c.json", "w.safetensors"]


@pytest.mark.parametrize("text,message", [("{oops", "not valid JSON"), ("[1, 2]", "not a JSON object")])
def test_a_damaged_config_is_a_checkpoint_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=rf"config\.json.*{message}"):
        read_config(path)


def test_non_finite_weights_are_refused_naming_the_folder(tmp_path):
    folder = save_pretrained(tmp_path / "bad", {"w": torch.tensor([1.0, float("nan")])}, {})
    with pytest.raises(CheckpointError, match=r"bad has non-finite"):
        load_pretrained(folder)


def test_backbones_and_mil_heads_are_written_by_the_same_function(tmp_path, monkeypatch):
    from ssmamba.mil import create_mil_head, load_mil_model, save_mil_model
    from ssmamba.models import create_model, load_config
    from ssmamba.models import save_pretrained as save_backbone

    written = []  # every weights file goes through io.pretrained's writer
    real = checkpoint_folder.save_file

    def spy(state, path, **kwargs):
        written.append(Path(path).name)
        return real(state, path, **kwargs)

    monkeypatch.setattr(checkpoint_folder, "save_file", spy)
    backbone = save_backbone(create_model("ssmamba_test", num_classes=2), tmp_path / "backbone")
    torch.manual_seed(0)
    head = create_mil_head("abmil", 8, 2, hidden_dim=16)
    save_mil_model(head, tmp_path / "head", head_kwargs={"hidden_dim": 16}, class_names=["a", "b"])
    assert written == ["model.safetensors", "mil_model.safetensors"]
    assert load_config(backbone)["ssmamba_version"]
    loaded, config = load_mil_model(tmp_path / "head")
    assert config["head"] == "abmil"  # the registered name, found from the class
    assert json.loads((tmp_path / "head" / "mil_config.json").read_text())["ssmamba_version"]
    features = torch.randn(5, 8)
    torch.testing.assert_close(loaded(features), head.eval()(features))
