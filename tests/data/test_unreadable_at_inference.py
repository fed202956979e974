"""A file that becomes unreadable after the check: training substitutes a neighbour, inference refuses to."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssmamba.data import load_unlabelled


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def test_inference_never_puts_one_images_pixels_under_anothers_name(tmp_path):
    folder = _folder(tmp_path)
    strict_order = load_unlabelled(folder, verify=True, replace_unreadable=False)
    training = load_unlabelled(folder, verify=True)
    names = [str(r.image) for r in strict_order.records]
    broken = names.index(str(folder / "1.png"))
    (folder / "1.png").write_bytes((folder / "1.png").read_bytes()[:40])  # truncated after the check
    with pytest.raises(ValueError, match="1.png became unreadable"):
        strict_order[broken]
    substitute, _ = training[broken]  # training goes on with the next readable image
    assert np.array_equal(np.asarray(substitute), np.asarray(Image.open(names[broken + 1]).convert("RGB")))
