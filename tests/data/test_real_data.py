"""The real data sets beside the checkout load through ``load_dataset`` (skipped when ``../shared/data`` is absent)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmamba.data import load_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def data_root() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def test_idc_manifest_uses_patient_groups_and_pads_border_strips(data_root):
    test = load_dataset(data_root / "idc" / "labels.csv", "test", verify=False, min_size=50)
    assert test.classes == ["0", "1"] and test.group_name == "patient_id"
    train = load_dataset(data_root / "idc" / "labels.csv", "train", verify=False)
    assert not set(train.groups) & set(test.groups)           # the released split is by patient
    strips = []
    for index, record in enumerate(test.records):
        with Image.open(record.image.path) as image:      # header only
            if image.size != (50, 50):
                strips.append(index)
    assert strips                                          # the release has 87 strips shorter than 50 px
    assert {test[i][0].size for i in strips} == {(50, 50)}


def test_pcam1000_manifest(data_root):
    train = load_dataset(data_root / "pcam1000" / "labels.csv", "train")
    assert len(train) == 600 and train.skipped == []
    assert train.class_counts() == {"0": 289, "1": 311}
    image, label = train[0]
    assert image.size == (96, 96) and label in (0, 1)


def test_crchp_nuclei_crops(data_root):
    val = load_dataset(data_root / "crchp" / "nuclei.csv", "val", crop_size=32)
    assert val.classes == ["epithelial", "fibroblast", "inflammatory", "other"]
    assert len(val) > 1000 and len(set(val.groups)) == 10       # 10 validation images
    crops = [val[i][0] for i in np.linspace(0, len(val) - 1, 20).astype(int)]
    assert {c.size for c in crops} == {(32, 32)} and {c.mode for c in crops} == {"RGB"}
    # nuclei are haematoxylin-dark: a crop's centre is darker than its mean
    darker = [np.asarray(c)[14:18, 14:18].mean() < np.asarray(c).mean() for c in crops]
    assert np.mean(darker) > 0.7
