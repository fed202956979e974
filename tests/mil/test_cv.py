from __future__ import annotations

import numpy as np
import pytest

from ssmamba.mil.bags import read_bag_table
from ssmamba.workflows.mil_cv import make_folds, validation_split


def test_folds_are_stratified_grouped_by_patient_and_cover_every_bag_once(bag_folder):
    table = read_bag_table(*bag_folder)
    folds = make_folds(table, 3, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(24))
    labels = np.asarray(table.labels)
    for train, test in folds:
        assert not set(train) & set(test)
        train_patients = {table.records[i].group for i in train}
        assert not train_patients & {table.records[i].group for i in test}
        assert 0 < labels[test].mean() < 1  # both classes in every test fold


def test_fold_column_defines_folds(tmp_path, bag_folder):
    _, features = bag_folder
    csv = tmp_path / "folds.csv"
    csv.write_text("slide_id,label,fold\n" + "".join(f"slide_{i:03d},{i % 2},{i % 3}\n" for i in range(12)))
    folds = make_folds(read_bag_table(csv, features), None)
    assert len(folds) == 3 and folds[1][1].tolist() == [1, 4, 7, 10]
    with pytest.raises(ValueError, match="at least 2 folds"):
        make_folds(read_bag_table(csv, features), 1)


def test_too_many_folds_for_the_rarest_class(tmp_path, bag_folder):
    _, features = bag_folder
    csv = tmp_path / "rare.csv"
    csv.write_text("slide_id,label\n" + "".join(f"slide_{i:03d},{int(i == 0)}\n" for i in range(12)))
    with pytest.raises(ValueError, match="rarest class has 1 bags"):
        make_folds(read_bag_table(csv, features), 5)


def test_validation_split_holds_out_whole_patients(bag_folder):
    table = read_bag_table(*bag_folder)
    train, test = make_folds(table, 3, seed=0)[0]
    inner_train, inner_val = validation_split(table, train, 0.25, seed=0)
    assert sorted(np.concatenate([inner_train, inner_val]).tolist()) == sorted(train.tolist())
    assert len(inner_val) > 0
    assert not {table.records[i].group for i in inner_train} & {table.records[i].group for i in inner_val}
    assert len(validation_split(table, train, 0.0, seed=0)[1]) == 0
