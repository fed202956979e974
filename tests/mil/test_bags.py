from __future__ import annotations

import h5py
import numpy as np
import pytest

from ssmamba.mil.bags import BagDataset, read_bag_table


def _write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_reads_labels_patients_and_feature_files(bag_folder):
    table_path, features = bag_folder
    table = read_bag_table(table_path, features)
    assert table.class_names == ["benign", "tumour"]
    assert table.patient_column == "patient_id"
    assert len(table.records) == 24 and table.records[1].label == 1
    assert table.records[0].path == features / "slide_000.h5"
    assert len({r.group for r in table.records}) < 24  # slides share patients
    assert "24 bags" in table.describe() and "patients" in table.describe()
    dataset = BagDataset(table.records)
    features_0, coords_0, label_0 = dataset[0]
    assert features_0.dtype.is_floating_point and coords_0.shape == (len(features_0), 2) and label_0 == 0
    assert dataset.feature_dim == 8


def test_ids_that_are_image_paths_find_their_feature_file(tmp_path):
    """crchp's bags.csv names images (images/img1.png); features are stored as img1.h5."""
    features = tmp_path / "features"
    features.mkdir()
    for name in ("img1", "img2", "img3", "img4"):
        with h5py.File(features / f"{name}.h5", "w") as h5:
            h5["features"], h5["coords"] = np.ones((3, 4), np.float32), np.zeros((3, 2), np.int64)
    table_path = _write_csv(tmp_path / "bags.csv", ["image", "split", "label", "n_epithelial"],
                            [("images/img1.png", "train", 0, 0), ("images/img2.png", "test", 1, 35),
                             ("images/img3.png", "val", 1, 3), ("images/img4.png", "train", 0, 0)])
    table = read_bag_table(table_path, features, id_column="image")
    assert [r.slide_id for r in table.records] == ["img1", "img2", "img3", "img4"]
    assert [r.split for r in table.records] == ["train", "test", "val", "train"]
    assert table.class_names == ["0", "1"] and table.patient_column is None


def test_missing_feature_files_are_an_error_unless_allowed(bag_folder):
    table_path, features = bag_folder
    (features / "slide_003.h5").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 24 bags.*slide_003.*--allow-missing"):
        read_bag_table(table_path, features)
    with pytest.warns(UserWarning, match="left out"):
        table = read_bag_table(table_path, features, allow_missing=True)
    assert len(table.records) == 23


def test_bad_csvs_get_specific_errors(tmp_path, bag_folder):
    _, features = bag_folder
    with pytest.raises(ValueError, match="no column 'slide_id'.*--id-column"):
        read_bag_table(_write_csv(tmp_path / "a.csv", ["name", "label"], [("slide_000", 1)]), features)
    with pytest.raises(ValueError, match="only one class"):
        read_bag_table(_write_csv(tmp_path / "b.csv", ["slide_id", "label"], [("slide_000", 1)]), features)
    with pytest.raises(ValueError, match="not among the classes"):
        read_bag_table(_write_csv(tmp_path / "c.csv", ["slide_id", "label"], [("slide_000", "x")]), features,
                       class_names=["benign", "tumour"])
    with pytest.raises(ValueError, match="split 'training'"):
        read_bag_table(_write_csv(tmp_path / "d.csv", ["slide_id", "label", "split"],
                                  [("slide_000", 0, "training"), ("slide_001", 1, "test")]), features)


def test_numeric_labels_sort_by_value(tmp_path, bag_folder):
    _, features = bag_folder
    rows = [(f"slide_{i:03d}", label) for i, label in enumerate([10, 2, 1, 2])]
    table = read_bag_table(_write_csv(tmp_path / "n.csv", ["slide_id", "label"], rows), features)
    assert table.class_names == ["1", "2", "10"] and table.records[0].label == 2


def test_feature_width_mismatch_is_reported(bag_folder):
    table_path, features = bag_folder
    with h5py.File(features / "slide_005.h5", "w") as h5:
        h5["features"], h5["coords"] = np.ones((3, 5), np.float32), np.zeros((3, 2), np.int64)
    with pytest.raises(ValueError, match="disagree on the embedding width"):
        BagDataset(read_bag_table(table_path, features).records)


def test_bags_made_with_different_feature_keys_are_refused(bag_folder):
    from ssmamba.io.features import FeatureKey

    table_path, features = bag_folder
    key = FeatureKey(encoder="ssmamba_tiny", weights="checkpoint", weights_sha256="ab" * 32, input_size=64,
                     input_size_source="tile", target_mpp=0.5, patch_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    files = sorted(features.glob("*.h5"))
    for index, path in enumerate(files):
        with h5py.File(path, "a") as h5:
            h5.attrs["feature_key"] = (key if index else FeatureKey(**{**key.__dict__, "input_size": 224})).to_json()
    table = read_bag_table(table_path, features)
    with pytest.raises(ValueError, match="input_size: 224 -> 64|input_size: 64 -> 224"):
        BagDataset(table.records)
    with h5py.File(files[0], "a") as h5:
        h5.attrs["feature_key"] = key.to_json()
    assert BagDataset(table.records).feature_dim == 8
