"""Data readers are registered per source kind, with the test that recognises their sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmamba.data import ReadOptions, SourceKind, detect_kind, register_reader
from ssmamba.data.load import READERS, Reader


def test_every_kind_has_exactly_one_reader_and_a_second_is_refused():
    assert set(READERS) == set(SourceKind)
    with pytest.raises(ValueError, match="already registered"):
        register_reader(SourceKind.NPZ, lambda source: False)(lambda source, options: None)


def test_detection_asks_the_readers_in_order_and_load_dataset_calls_the_one_found(tmp_path, monkeypatch):
    csv = tmp_path / "points.csv"
    csv.write_text("image,x,y,label\na.png,1,2,x\n")
    assert detect_kind(csv) is SourceKind.POINTS  # POINTS is asked before MANIFEST, which also takes any .csv
    calls = []

    def fake_points(source: Path, options: ReadOptions):
        calls.append((source, options.crop_size, options.label_column))
        raise RuntimeError("stop here")

    monkeypatch.setitem(READERS, SourceKind.POINTS, Reader(fake_points, READERS[SourceKind.POINTS].detects))
    from ssmamba.data import load_dataset

    with pytest.raises(RuntimeError, match="stop here"):
        load_dataset(csv, crop_size=48, label_column="grade")
    assert calls == [(csv, 48, "grade")]
