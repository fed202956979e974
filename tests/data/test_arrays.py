import pickle

import h5py
import numpy as np
import pytest

from ssmamba.data import SourceKind, detect_kind, load_dataset
from ssmamba.data.arrays import PATHMNIST_CLASSES


def test_pcam_folder_reads_rows_lazily_per_split(pcam_dir):
    assert detect_kind(pcam_dir) is SourceKind.PCAM
    train = load_dataset(pcam_dir, "train")
    assert len(train) == 6 and train.classes == ["0", "1"]
    image, label = train[5]
    assert image.size == (96, 96) and image.mode == "RGB"
    assert np.asarray(image)[0, 0, 0] == 5 and label == 1
    val = load_dataset(pcam_dir, "val")
    assert len(val) == 3 and val.split_name == "val"
    assert len(load_dataset(pcam_dir)) == 13


def test_pcam_single_x_file_finds_its_labels(pcam_dir):
    x_file = pcam_dir / "camelyonpatch_level_2_split_test_x.h5"
    assert detect_kind(x_file) is SourceKind.PCAM
    test = load_dataset(x_file)
    assert len(test) == 4 and test.labels.tolist() == [0, 1, 0, 1]
    (pcam_dir / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(FileNotFoundError, match="_test_y.h5 is missing"):
        load_dataset(x_file)
    assert len(load_dataset(x_file, labelled=False)) == 4


def test_pcam_dataset_survives_pickling_after_reading(pcam_dir):
    train = load_dataset(pcam_dir, "train")
    train[0]                                   # opens the HDF5 file in this process
    clone = pickle.loads(pickle.dumps(train))  # as a spawned DataLoader worker would receive it
    assert np.asarray(clone[4][0])[0, 0, 0] == 4


def test_pcam_wrong_shape_is_reported(tmp_path):
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_x.h5", "w") as handle:
        handle.create_dataset("x", data=np.zeros((2, 96, 96), dtype=np.float32))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_train_y.h5", "w") as handle:
        handle.create_dataset("y", data=np.zeros((2, 1, 1, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="must be \\(N, H, W, 3\\).*float32"):
        load_dataset(tmp_path)


def test_pathmnist_npz(pathmnist_npz):
    assert detect_kind(pathmnist_npz) is SourceKind.NPZ
    test = load_dataset(pathmnist_npz, "test")
    assert test.classes == PATHMNIST_CLASSES
    assert len(test) == 9
    image, label = test[7]
    assert image.size == (28, 28) and np.asarray(image)[0, 0, 0] == 7 and label == 7
    assert len(load_dataset(pathmnist_npz, "train")) == 18
    assert len(load_dataset(pathmnist_npz, labelled=False)) == 36


def test_npz_without_image_arrays_is_reported(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, features=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no '<split>_images' arrays.*features"):
        load_dataset(path)


def test_unknown_source_kind_is_reported(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot tell what kind"):
        load_dataset(path)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nothing_here")


def _first_pixel(image):
    return int(np.asarray(image)[0, 0, 0])


def test_pcam_reads_in_dataloader_workers(pcam_dir):
    import torch.utils.data

    train = load_dataset(pcam_dir, "train", transform=_first_pixel)
    train[0]                                   # the parent opens the HDF5 file before the workers start
    loader = torch.utils.data.DataLoader(train, batch_size=3, num_workers=2)
    values = [int(v) for batch, _ in loader for v in batch]
    assert values == list(range(6))
