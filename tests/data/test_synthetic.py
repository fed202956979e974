import csv

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from ssmamba.data import load_dataset
from ssmamba.data.synthetic import CLASSES, make_synthetic_dataset, render_patch, save_class_grid


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=40, size=64, seed=0)


def test_manifest_loads_with_all_classes_split_by_patient(synthetic_manifest):
    splits = {s: load_dataset(synthetic_manifest, s) for s in ("train", "val", "test")}
    assert splits["train"].classes == sorted(CLASSES)
    assert sum(len(d) for d in splits.values()) == 5 * 40
    for dataset in splits.values():
        assert min(dataset.class_counts().values()) > 0
    patients = {s: set(d.groups) for s, d in splits.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    image, _ = splits["test"][0]
    assert image.size == (64, 64) and image.mode == "RGB"
    # the folder itself is also a class tree
    assert load_dataset(synthetic_manifest.parent).class_counts() == {c: 40 for c in sorted(CLASSES)}


def test_generation_is_deterministic_for_a_seed(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", n_per_class=3, size=32, seed=7)
    second = make_synthetic_dataset(tmp_path / "b", n_per_class=3, size=32, seed=7)
    other = make_synthetic_dataset(tmp_path / "c", n_per_class=3, size=32, seed=8)
    assert first.read_text() == second.read_text()
    with open(first) as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    for path in paths:
        assert (first.parent / path).read_bytes() == (second.parent / path).read_bytes()
    assert any((first.parent / p).read_bytes() != (other.parent / p).read_bytes() for p in paths)


def test_patches_look_like_h_and_e():
    rng = np.random.default_rng(0)
    for name in CLASSES:
        patch = render_patch(name, 64, rng).astype(float)
        red, green, blue = patch[..., 0].mean(), patch[..., 1].mean(), patch[..., 2].mean()
        assert green < red and green < blue          # pink/purple: eosin and haematoxylin both absorb green
    lymphocytes = render_patch("lymphocytes", 64, np.random.default_rng(1))
    stroma = render_patch("stroma", 64, np.random.default_rng(1))
    assert lymphocytes.mean() < stroma.mean()          # dense dark nuclei
    with pytest.raises(ValueError, match="unknown synthetic class"):
        render_patch("bone", 64, rng)


def _downsampled_pixels(dataset, side=8):
    features = [np.asarray(img.resize((side, side), Image.BILINEAR), dtype=np.float32).ravel() / 255
                for img, _ in dataset]
    return np.stack(features), dataset.labels


def test_classes_are_learnable_but_not_trivial(synthetic_manifest):
    train_x, train_y = _downsampled_pixels(load_dataset(synthetic_manifest, "train"))
    test_x, test_y = _downsampled_pixels(load_dataset(synthetic_manifest, "test"))
    classifier = LogisticRegression(max_iter=500).fit(train_x, train_y)
    accuracy = (classifier.predict(test_x) == test_y).mean()
    assert 0.4 < accuracy < 0.98, accuracy             # chance is 0.2


def test_class_grid_is_small(tmp_path):
    path = save_class_grid(tmp_path / "grid.png", n_per_class=4, size=48)
    assert path.stat().st_size < 300_000
    assert Image.open(path).size[0] > 200


def test_too_few_images_for_the_splits_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="patients"):
        make_synthetic_dataset(tmp_path, n_per_class=2)
