import logging
import pickle

import numpy as np
import pytest
from data_helpers import noise_image, truncated_png
from PIL import Image

from ssmamba.data import SourceKind, detect_kind, load_dataset, load_unlabelled


def test_class_tree_loads_every_mode_as_rgb(class_tree):
    dataset = load_dataset(class_tree)
    assert detect_kind(class_tree) is SourceKind.FOLDER
    assert dataset.classes == ["a", "b"]
    assert dataset.class_counts() == {"a": 5, "b": 7}   # a/nested/deep.jpg counts; b has gray, rgba, palette
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.mode == "RGB" and image.size == (24, 24)
        assert label == (0 if "/a/" in str(dataset.records[index].image) else 1)
    assert dataset.skipped == []


def test_transform_is_applied_and_index_out_of_range_raises(class_tree):
    dataset = load_dataset(class_tree, transform=lambda image: np.asarray(image).shape)
    assert dataset[0][0] == (24, 24, 3)
    assert dataset[-1][0] == (24, 24, 3)
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    assert len(list(dataset)) == len(dataset)  # iteration stops


def test_corrupt_and_truncated_files_are_skipped_and_listed(class_tree):
    rng = np.random.default_rng(0)
    truncated_png(class_tree / "a" / "truncated.png", rng)
    (class_tree / "b" / "not_an_image.png").write_bytes(b"hello")
    dataset = load_dataset(class_tree)
    skipped = {name.split("/")[-1] for name, _ in dataset.skipped}
    assert skipped == {"truncated.png", "not_an_image.png"}
    assert len(dataset) == 12
    with pytest.raises(ValueError, match="unreadable"):
        load_dataset(class_tree, strict=True)


def test_unverified_bad_file_is_replaced_at_load_time_or_raises_when_strict(class_tree, caplog):
    for path in (class_tree / "a").glob("*.png"):
        path.unlink()
    (class_tree / "a" / "0.png").write_bytes(b"broken")
    dataset = load_dataset(class_tree, verify=False)
    broken = next(i for i, r in enumerate(dataset.records) if r.image.path.name == "0.png")
    with caplog.at_level(logging.WARNING):
        image, label = dataset[broken]
    assert image.mode == "RGB"                       # the next readable sample instead
    assert dataset.records[broken].image.path.name == "0.png"
    assert "0.png" in dataset.skipped[-1][0] and "0.png" in caplog.text
    strict = load_dataset(class_tree, verify=False, strict=True)
    with pytest.raises(RuntimeError, match="0.png"):
        strict[broken]


def test_split_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for name in ("x", "y"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(noise_image(rng, 8, (100, 100, 100))).save(tmp_path / split / name / f"{i}.png")
    assert len(load_dataset(tmp_path, "train")) == 6
    val = load_dataset(tmp_path, "validation")
    assert len(val) == 4 and val.classes == ["x", "y"] and val.split_name == "val"
    assert len(load_dataset(tmp_path)) == 12


def test_empty_class_folder_is_an_error_naming_it(class_tree):
    (class_tree / "c").mkdir()
    with pytest.raises(ValueError, match="'c' holds no image"):
        load_dataset(class_tree)


def test_explicit_classes_fix_the_order_and_reject_unknown_folders(class_tree):
    assert load_dataset(class_tree, classes=["b", "a"]).class_counts() == {"b": 7, "a": 5}
    with pytest.raises(ValueError, match="'b' is not one of"):
        load_dataset(class_tree, classes=["a"])
    with pytest.raises(ValueError, match="'zzz'.*no samples"):
        load_dataset(class_tree, classes=["a", "b", "zzz"])


def test_unlabelled_flat_folder_recursive(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    for path in (tmp_path / "one.png", tmp_path / "deep" / "two.tif", tmp_path / "deep" / "er" / "three.jpg"):
        Image.fromarray(noise_image(rng, 12, (90, 90, 90))).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_unlabelled(tmp_path)
    assert len(dataset) == 3 and dataset.classes == [] and not dataset.labelled
    assert all(dataset[i][1] == -1 for i in range(3))
    with pytest.raises(ValueError, match="no class subfolders"):
        load_dataset(tmp_path / "deep" / "er")


def test_dataset_pickles_for_worker_processes(class_tree):
    dataset = load_dataset(class_tree)
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(np.asarray(clone[3][0]), np.asarray(dataset[3][0]))
    assert "12 labelled samples" in clone.describe()
