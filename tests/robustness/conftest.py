"""Assets the robustness cases break: tiny images, a manifest, ssmamba_test checkpoints and a finished run.

Everything is built here (a few seconds) and copied before a case changes it; the originals are session-shared and
read-only by convention, and each case checks that what it was given is unchanged afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from robust_helpers import CLASSES, SIZE, Assets, cli, tile, write_manifest

from ssmamba.models import create_model, save_pretrained


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    root = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(0)
    rows = []
    for label, dark in zip(CLASSES, (False, True)):
        (root / "images" / label).mkdir(parents=True)
        for i in range(8):
            path = root / "images" / label / f"{i}.png"
            Image.fromarray(tile(rng, dark)).save(path)
            rows.append((str(path), label, "train" if i < 4 else "val" if i < 6 else "test"))
    manifest = write_manifest(root / "manifest.csv", rows)
    cfg = {"class_names": list(CLASSES), "input_size": [3, SIZE, SIZE], "crop_size": SIZE}
    checkpoint = save_pretrained(create_model("ssmamba_test", num_classes=2), root / "ckpt", pretrained_cfg=cfg)
    encoder = save_pretrained(create_model("ssmamba_test", num_classes=0), root / "encoder",
                              pretrained_cfg={"input_size": [3, SIZE, SIZE]})
    assets = Assets(root, root / "images", manifest, checkpoint, encoder, root / "run", root / "pre")
    for args in (assets.finetune_args(assets.run), assets.pretrain_args(assets.pre)):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return assets


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)
