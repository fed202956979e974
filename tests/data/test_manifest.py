import logging

import numpy as np
import pytest
from data_helpers import noise_image, write_manifest
from PIL import Image

from ssmamba.data import SourceKind, detect_kind, load_dataset


@pytest.fixture
def split_manifest(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "patches").mkdir()
    rows = []
    for i, (label, split) in enumerate([("0", "train"), ("1", "train"), ("10", "train"), ("0", "val"),
                                        ("1", "val"), ("10", "test"), ("2", "test"), ("2", "train")]):
        Image.fromarray(noise_image(rng, 20, (180, 120, 170))).save(tmp_path / "patches" / f"{i}.png")
        rows.append((f"patches/{i}.png", label, split))
    return write_manifest(tmp_path / "labels.csv", rows, ("path", "label", "split"))


def test_manifest_with_split_column(split_manifest):
    assert detect_kind(split_manifest) is SourceKind.MANIFEST
    train = load_dataset(split_manifest, "train")
    assert train.classes == ["0", "1", "2", "10"]      # integer labels sort numerically
    assert len(train) == 4 and train.labels.tolist() == [0, 1, 3, 2]
    image, label = train[2]
    assert image.size == (20, 20) and label == 3
    assert len(load_dataset(split_manifest, "val")) == 2
    assert len(load_dataset(split_manifest)) == 8


def test_class_absent_from_a_split_warns(split_manifest, caplog):
    with caplog.at_level(logging.WARNING):
        val = load_dataset(split_manifest, "val")
    assert val.class_counts() == {"0": 1, "1": 1, "2": 0, "10": 0}
    assert "have no samples in split val" in caplog.text


def test_missing_file_is_skipped_or_strict_raises(split_manifest):
    (split_manifest.parent / "patches" / "0.png").unlink()
    train = load_dataset(split_manifest, "train")
    assert len(train) == 3
    assert train.skipped[0][0].endswith("0.png") and "missing" in train.skipped[0][1]
    with pytest.raises(FileNotFoundError, match="line 2"):
        load_dataset(split_manifest, "train", strict=True)


def test_bad_csvs_name_the_file_line_and_field(tmp_path, split_manifest):
    text = split_manifest.read_text()
    bad_split = tmp_path / "bad_split.csv"
    bad_split.write_text(text.replace("patches/3.png,0,val", "patches/3.png,0,holdout"))
    with pytest.raises(ValueError, match=r"bad_split.csv, line 5, column 'split'.*holdout"):
        load_dataset(bad_split.parent / "bad_split.csv")
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("path,split\npatches/0.png,train\n")
    with pytest.raises(ValueError, match="no_label.csv: no label column 'label'"):
        load_dataset(no_label)
    with pytest.raises(ValueError, match=r"labels.csv, line 4: label '10' is not one of"):
        load_dataset(split_manifest, classes=["0", "1", "2"])
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(ValueError, match="no rows"):
        load_dataset(empty)


def test_empty_split_is_an_error(split_manifest):
    text = split_manifest.read_text().replace(",val\n", ",train\n")
    split_manifest.write_text(text)
    with pytest.raises(ValueError, match=r"split 'val' is empty \(splits present: \['test', 'train'\]\)"):
        load_dataset(split_manifest, "val")


def test_seeded_split_is_by_group_and_deterministic(grouped_manifest):
    datasets = {split: load_dataset(grouped_manifest, split, split_fractions=(0.5, 0.25, 0.25), seed=3)
                for split in ("train", "val", "test")}
    groups = {split: set(d.groups) for split, d in datasets.items()}
    assert sum(len(d) for d in datasets.values()) == 48
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert (len(groups["train"]), len(groups["val"]), len(groups["test"])) == (6, 3, 3)
    assert datasets["train"].group_name == "patient_id"
    again = load_dataset(grouped_manifest, "train", split_fractions=(0.5, 0.25, 0.25), seed=3)
    assert [r.image for r in again.records] == [r.image for r in datasets["train"].records]
    other_seed = load_dataset(grouped_manifest, "train", split_fractions=(0.5, 0.25, 0.25), seed=4)
    assert set(other_seed.groups) != groups["train"]


def test_without_groups_the_split_is_by_row_stratified_with_a_warning(grouped_manifest, caplog):
    text = grouped_manifest.read_text().replace("patient_id", "note")
    grouped_manifest.write_text(text)
    with caplog.at_level(logging.WARNING):
        test = load_dataset(grouped_manifest, "test", split_fractions=(0.5, 0.25, 0.25))
    assert "no split and no group column" in caplog.text
    assert test.class_counts() == {"benign": 6, "tumour": 6}   # stratified


def test_group_column_can_be_named(grouped_manifest):
    text = grouped_manifest.read_text().replace("patient_id", "donor")
    grouped_manifest.write_text(text)
    with pytest.raises(ValueError, match="no group column 'patient'"):
        load_dataset(grouped_manifest, "train", group_column="patient")
    train = load_dataset(grouped_manifest, "train", group_column="donor")
    assert train.group_name == "donor" and all(g.startswith("P") for g in train.groups)


def test_groups_shared_across_given_splits_are_reported(split_manifest, caplog):
    text = split_manifest.read_text().replace("path,label,split", "path,label,split,group")
    lines = text.splitlines()
    split_manifest.write_text("\n".join([lines[0]] + [line + ",same" for line in lines[1:]]) + "\n")
    with caplog.at_level(logging.WARNING):
        load_dataset(split_manifest, "train")
    assert "appear in more than one split" in caplog.text


def test_bad_split_fractions_are_rejected(grouped_manifest):
    with pytest.raises(ValueError, match="summing to 1"):
        load_dataset(grouped_manifest, "train", split_fractions=(0.5, 0.5, 0.5))
