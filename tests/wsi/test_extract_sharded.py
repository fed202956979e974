"""``wsi extract`` under torchrun: the slides are split over the processes, each written once and whole, and a
rerun (any number of processes) skips what is done."""

from __future__ import annotations

import hashlib

from click.testing import CliRunner

from ssmamba.cli import main
from ssmamba.wsi.config import TilingConfig
from ssmamba.wsi.pipeline import tile_slide

# each process records the slides it wrote (or found done), with its rank
_RECORD_WRITES = """
import os
import ssmamba.wsi.pipeline as pipeline
real = pipeline.extract_slide_features
def extract_slide_features(grid, *args, **kwargs):
    result = real(grid, *args, **kwargs)
    with open(os.environ["SSMAMBA_TEST_LOG"], "a") as log:
        log.write(f"{os.environ['RANK']} {grid.slide_name} {'skipped' if result.skipped else 'written'}\\n")
    return result
pipeline.extract_slide_features = extract_slide_features
"""


def test_two_processes_write_each_slide_exactly_once_and_a_rerun_skips_them(tmp_path, torchrun, make_blob_image,
                                                                            make_pyramid):
    config = TilingConfig(patch_size=128, target_mpp=1.0, thumbnail_max_side=256)
    out = tmp_path / "out"
    names = [f"slide{i}" for i in range(5)]
    for i, name in enumerate(names):
        box = (64 * i, 128, 64 * i + 640, 640)
        make_pyramid(tmp_path / f"{name}.tif", make_blob_image(1024, 768, box), mpp=0.5)
        tile_slide(tmp_path / f"{name}.tif", config, out)
    log = tmp_path / "writes.txt"
    args = ["wsi", "extract", out, "--encoder", "ssmamba_test", "--input-size", 32, "--batch-size", 16,
            "--device", "cpu", "--no-progress"]
    result = torchrun(tmp_path, *args, prelude=_RECORD_WRITES, env={"SSMAMBA_TEST_LOG": str(log)})
    assert result.returncode == 0, result.stderr[-3000:]
    writes = sorted(line.split() for line in log.read_text().splitlines())
    assert sorted(name for _, name, what in writes if what == "written") == names  # each slide once
    assert {rank for rank, _, _ in writes} == {"0", "1"}  # and both processes had work
    assert sorted(name for rank, name, _ in writes if rank == "1") == names[1::2]
    assert result.stdout.count("5 slide(s), 3 in this process") == 1  # the header from rank 0 only

    (folder,) = (out / "features_1.00mpp_128px").iterdir()
    files = sorted(folder.glob("*.h5"))
    assert [f.stem for f in files] == names and not list(folder.glob("*.partial"))
    before = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    rerun = CliRunner().invoke(main, [str(a) for a in args])
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.count("(already done)") == 5
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == before
