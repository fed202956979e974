"""Model factory: registry, timm integration, save/load round trips and loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ssmamba
from ssmamba.models import CheckpointMismatchError, create_model, list_models, save_pretrained


def test_registered_variants():
    assert {"ssmamba_test", "ssmamba_tiny", "ssmamba_tiny_fast", "ssmamba_small", "ssmamba_base"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'ssmamba_huge'.*ssmamba_tiny"):
        create_model("ssmamba_huge")


def test_tiny_parameter_budget():
    model = create_model("ssmamba_tiny", num_classes=0)
    params = sum(p.numel() for p in model.parameters())
    assert 5e6 <= params <= 10e6, params


def test_timm_create_model_after_import(no_network):
    timm = pytest.importorskip("timm")
    model = timm.create_model("ssmamba_test", num_classes=3)
    assert isinstance(model, ssmamba.models.SSMamba)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    features = timm.create_model("ssmamba_test", features_only=True, out_indices=(2, 3))
    assert features.feature_info.channels() == [32, 64]
    # asking for hub weights fails at once with a clear message, before any download is tried
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("ssmamba_test", pretrained=True)


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = create_model("ssmamba_test", num_classes=3, lpr=False).eval()
    save_pretrained(model, tmp_path / "ckpt", pretrained_cfg={"mpp": 0.5, "class_names": ["a", "b", "c"]})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architecture"] == "ssmamba_test" and config["model_args"]["lpr"] is False
    assert config["pretrained_cfg"]["mpp"] == 0.5
    loaded = create_model(checkpoint=tmp_path / "ckpt").eval()
    assert loaded.pretrained_cfg["class_names"] == ["a", "b", "c"]
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a path works as the name, too
    assert isinstance(create_model(str(tmp_path / "ckpt")), ssmamba.models.SSMamba)


def test_new_head_on_pretrained_encoder(tmp_path):
    encoder = create_model("ssmamba_test", num_classes=0)
    save_pretrained(encoder, tmp_path / "enc")
    model = create_model(checkpoint=tmp_path / "enc", num_classes=5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    torch.testing.assert_close(model.stem[0].weight, encoder.stem[0].weight)


def test_loading_into_a_different_architecture_fails_loudly(tmp_path):
    save_pretrained(create_model("ssmamba_test"), tmp_path / "ckpt")
    with pytest.raises(CheckpointMismatchError, match="differ from those saved"):
        create_model(checkpoint=tmp_path / "ckpt", lpr=False)
    with pytest.raises(CheckpointMismatchError, match="holds a 'ssmamba_test' model"):
        create_model("ssmamba_tiny", checkpoint=tmp_path / "ckpt")
    # weights that do not fit the config: keys are named and the config is pointed to
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["model_args"]["lpr"] = False
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="unexpected keys.*lpr"):
        create_model(checkpoint=tmp_path / "ckpt")


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model(checkpoint=tmp_path)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "mambaout_femto", "vit_tiny_patch16_224"])
def test_timm_architecture_round_trip(tmp_path, arch):
    """A timm architecture is built with random weights (nothing downloaded), saved in the ssmamba checkpoint format
    with its constructor arguments, and loads back bit-identically, as a classifier or as an embedder."""
    model = create_model(arch, num_classes=3, img_size=48, pretrained_cfg={"class_names": ["a", "b", "c"]}).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3)
    save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architecture"] == arch and config["library"] == "timm" and config["num_classes"] == 3
    assert ("img_size" in config["model_args"]) == arch.startswith("vit")  # only fixed-size models need it
    loaded = create_model(checkpoint=tmp_path / "ckpt").eval()
    assert loaded.pretrained_cfg["class_names"] == ["a", "b", "c"]
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)
        embedder = create_model(checkpoint=tmp_path / "ckpt", num_classes=0).eval()
        assert embedder(x).shape == (2, embedder.num_features if not arch.startswith("mambaout")
                                     else embedder.head_hidden_size)
    # a new head keeps the body: the first parameter is shared, the classifier is new
    retargeted = create_model(checkpoint=tmp_path / "ckpt", num_classes=5)
    first = next(iter(model.state_dict()))
    torch.testing.assert_close(retargeted.state_dict()[first], model.state_dict()[first])
    assert retargeted(x).shape == (2, 5)


def test_timm_checkpoint_mismatch_is_loud(tmp_path):
    save_pretrained(create_model("resnet18", num_classes=2), tmp_path / "r18")
    with pytest.raises(CheckpointMismatchError, match="holds a 'resnet18' model, not 'convnext_atto'"):
        create_model("convnext_atto", checkpoint=tmp_path / "r18")
    with pytest.raises(ValueError, match="not an ssmamba variant .* and not a timm architecture"):
        create_model("resnet_does_not_exist")


def test_classifier_of_finetuned_ssmamba_is_dropped_for_embeddings(tmp_path):
    model = create_model("ssmamba_test", num_classes=3)
    save_pretrained(model, tmp_path / "ft")
    embedder = create_model(checkpoint=tmp_path / "ft", num_classes=0).eval()
    assert embedder(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    torch.testing.assert_close(embedder.stem[0].weight, model.stem[0].weight)


def test_a_folder_named_like_a_model_does_not_hijack_the_name(tmp_path, monkeypatch):
    """A registered name means that architecture; a folder of the same name in the working directory is loaded only
    when asked for as a path (``./ssmamba_test``, a ``Path``, or ``checkpoint=``)."""
    monkeypatch.chdir(tmp_path)
    save_pretrained(create_model("ssmamba_test", num_classes=3, lpr=False), tmp_path / "ssmamba_test")
    (tmp_path / "resnet18").mkdir()  # not even a checkpoint
    fresh = create_model("ssmamba_test")
    assert fresh.num_classes == 1000 and fresh.cfg.lpr is True
    assert create_model("resnet18", num_classes=2).num_classes == 2
    for spec in ("./ssmamba_test", Path("ssmamba_test"), str(tmp_path / "ssmamba_test")):
        loaded = create_model(spec)
        assert loaded.num_classes == 3 and loaded.cfg.lpr is False, spec
    assert create_model(checkpoint="ssmamba_test").num_classes == 3
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model("./resnet18")  # a path that is not a model name is a checkpoint, and this one is not


def test_save_pretrained_keeps_every_constructor_argument(tmp_path):
    model = create_model("ssmamba_test", num_classes=3, global_pool="max", drop_rate=0.25, drop_path_rate=0.1,
                         in_chans=4)
    save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (config["global_pool"], config["drop_rate"], config["drop_path_rate"], config["in_chans"]) == (
        "max", 0.25, 0.1, 4)
    loaded = create_model(checkpoint=tmp_path / "ckpt").eval()
    assert loaded.global_pool.pool_type == "max" and loaded.head_drop.p == 0.25 and loaded.drop_path_rate == 0.1
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), loaded.head(loaded.forward_features(x).amax((2, 3))))
        assert torch.equal(loaded(x), model.eval()(x))
    # a caller's own value still wins over the saved one
    assert create_model(checkpoint=tmp_path / "ckpt", global_pool="avg").global_pool.pool_type == "avg"


def test_checkpoint_saved_before_timm_native_models_still_loads(tmp_path):
    """The state-dict names did not change when the models moved onto timm's layers and builder: a config.json
    without the newer constructor arguments loads with their defaults."""
    model = create_model("ssmamba_test", num_classes=3, attn_blocks=1, depths=(1, 1, 2, 2),
                         conv_block="inverted").eval()  # what every model was then; the default is now "dense"
    save_pretrained(model, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("global_pool", "drop_rate", "drop_path_rate"):
        del config[key]
    del config["model_args"]["conv_block"]  # written before the conv stages' block was a choice
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = create_model(checkpoint=tmp_path / "old").eval()
    assert loaded.global_pool.pool_type == "avg" and loaded.cfg.conv_block == "inverted"
    before = json.loads((Path(__file__).parent / "data" / "state_dict_f508e87.json").read_text())["shapes"]
    assert {k: list(v.shape) for k, v in loaded.state_dict().items()} == before
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_features_only_wrappers_are_not_saved_as_models(tmp_path):
    with pytest.raises(TypeError, match="save_pretrained takes models built by ssmamba.create_model"):
        save_pretrained(create_model("ssmamba_test", features_only=True), tmp_path / "f")


def test_the_fast_variant_is_tiny_with_a_cheaper_dms():
    """Same stages as ssmamba_tiny; DMS scans rows both ways at one scale with one decay per channel."""
    import timm

    fast, tiny = create_model("ssmamba_tiny_fast", num_classes=2), create_model("ssmamba_tiny", num_classes=2)
    assert timm.is_model("ssmamba_tiny_fast")
    mixers = [m for m in fast.modules() if type(m).__name__ == "DirectionalMultiScaleMixer"]
    assert len(mixers) == 6 + 2  # one per block of the state-space stages, depths (2, 2, 6, 2)
    for mixer in mixers:
        assert mixer.scales == (1,) and len(mixer.scans) == 1
        scan = mixer.scans[0]
        assert [d.value for d in scan.directions] == ["row", "row_reverse"] and scan.A_log.shape[1] == 1
    assert sum(p.numel() for p in fast.parameters()) < sum(p.numel() for p in tiny.parameters())
    out = fast(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 2) and all(torch.isfinite(p.grad).all() for p in fast.parameters() if p.grad is not None)
