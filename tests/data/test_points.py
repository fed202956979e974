import numpy as np
import pytest
from data_helpers import position_image, write_manifest
from PIL import Image

from ssmamba.data import Padding, PointCrop, SourceKind, detect_kind, load_dataset


@pytest.fixture
def points_csv(tmp_path):
    """Two 60x50 position-encoded parents (the second offset by +100 in blue) and nuclei on each."""
    (tmp_path / "images").mkdir()
    first = position_image(60, 50)
    second = position_image(60, 50)
    second[..., 2] += 100
    Image.fromarray(first).save(tmp_path / "images" / "one.png")
    Image.fromarray(second).save(tmp_path / "images" / "two.png")
    rows = [("images/one.png", "train", "epithelial", 30.4, 20.0),
            ("images/one.png", "train", "fibroblast", 2.0, 3.0),
            ("images/one.png", "train", "epithelial", 60.0, 50.0),      # on the far border: kept, padded
            ("images/two.png", "test", "fibroblast", 10.0, 40.0),
            ("images/two.png", "test", "inflammatory", 75.0, 10.0)]    # outside: dropped by verify
    return write_manifest(tmp_path / "nuclei.csv", rows, ("image", "split", "label", "x", "y"))


def test_points_csv_yields_centred_crops(points_csv):
    assert detect_kind(points_csv) is SourceKind.POINTS
    train = load_dataset(points_csv, "train", crop_size=8)
    assert train.classes == ["epithelial", "fibroblast", "inflammatory"]
    assert train.group_name == "image" and set(train.groups) == {"images/one.png"}
    crop, label = train[0]
    assert crop.size == (8, 8) and label == 0
    assert tuple(np.asarray(crop)[4, 4]) == (30, 20, 7)     # the nucleus sits at the crop centre
    assert (np.asarray(crop) == position_image(60, 50)[16:24, 26:34]).all()
    border, _ = train[2]
    assert border.size == (8, 8)
    test = load_dataset(points_csv, "test", crop_size=8)
    assert tuple(np.asarray(test[0][0])[4, 4]) == (10, 40, 107)


def test_point_outside_its_image_is_skipped(points_csv):
    test = load_dataset(points_csv, "test", crop_size=8)
    assert len(test) == 1
    assert "@(75,10)" in test.skipped[0][0] and "outside" in test.skipped[0][1]


def test_edge_padding_mode_is_configurable(points_csv):
    reflect = np.asarray(load_dataset(points_csv, "train", crop_size=8)[1][0])
    constant = np.asarray(load_dataset(points_csv, "train", crop_size=8, padding=Padding.CONSTANT)[1][0])
    # centre (2, 3): the crop starts at column -2 and row -1
    assert (constant[0] == 255).all() and (constant[:, :2] == 255).all()
    assert tuple(reflect[0, 2]) == (0, 1, 7)                 # row -1 mirrors row 1
    assert tuple(reflect[1, 0]) == (2, 0, 7)                 # column -2 mirrors column 2
    assert (reflect[1:, 2:] == constant[1:, 2:]).all()


def test_parents_are_decoded_once_while_cached(points_csv, monkeypatch):
    import ssmamba.data.records as records

    decoded = []
    original = records.read_rgb
    monkeypatch.setattr(records, "read_rgb", lambda path: decoded.append(path) or original(path))
    dataset = load_dataset(points_csv, verify=False, cache_mb=0.01)  # room for one 60x50 parent
    for index in (0, 1, 2):
        dataset[index]
    assert len(decoded) == 1                                  # three nuclei of one.png, one decode
    dataset[3]
    dataset[0]
    assert len(decoded) == 3                                  # cache of one: two.png evicted one.png


def test_points_csv_needs_coordinates(tmp_path):
    bad = write_manifest(tmp_path / "nuclei.csv", [("a.png", "x", "1", "2")], ("image", "label", "x", "y"))
    bad.write_text(bad.read_text().replace("a.png,x,1,2", "a.png,x,one,2"))
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="line 2: x='one'"):
        load_dataset(bad)


def test_unlabelled_points_ignore_labels(points_csv):
    dataset = load_dataset(points_csv, labelled=False, crop_size=16)
    assert dataset.classes == [] and len(dataset) == 4
    assert isinstance(dataset.records[0].image, PointCrop) and dataset[0][1] == -1
