"""Faults while writing (a full disk, an exception mid-write, kill -9, Ctrl-C) and the guarantees around them:
a checkpoint is complete or absent, the previous one survives, and ``--resume`` continues from it."""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from robust_helpers import Assets, cli, digest, error_line, write_manifest

from safetensors import SafetensorError

import ssmamba.io.pretrained as checkpoint_folder
import ssmamba.train.engine as engine
from ssmamba.data.hygiene import check_hygiene
from ssmamba.data.records import ImageFile, Record
from ssmamba.errors import CheckpointError, DataLeakageError, NonFiniteOutputError
from ssmamba.eval.inference import predict_proba
from ssmamba.mil import create_mil_head, load_mil_model, save_mil_model
from ssmamba.models import create_model, save_pretrained

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
SRC = str(Path(checkpoint_folder.__file__).resolve().parents[2])


def _failing_writer(real):
    """A writer that writes half of what ``real`` would, then fails like a full disk."""

    def write(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    return write


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.suffix == ".tmp"]


def _save_model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_pretrained(create_model("ssmamba_test", num_classes=2), folder / "best",
                           pretrained_cfg={"class_names": ["a", "b"]})


def _save_mil(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_mil_model(create_mil_head("abmil", 8, 2), folder / "fold_0", head_name="abmil", head_kwargs={},
                          class_names=["a", "b"])


def _save_state(folder: Path, seed: int) -> Path:
    engine.save_tensors({"model": torch.randn(1000, generator=torch.Generator().manual_seed(seed))},
                        folder / "training_state.pt")
    return folder / "training_state.pt"


WRITERS = {"model-checkpoint": (_save_model, checkpoint_folder, "save_file"),
           "mil-head": (_save_mil, checkpoint_folder, "save_file"),
           "training-state": (_save_state, engine.torch, "save")}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_failed_save_keeps_the_previous_checkpoint(kind, tmp_path, monkeypatch):
    save, module, name = WRITERS[kind]
    good = save(tmp_path, seed=0)
    before = digest(good)
    monkeypatch.setattr(module, name, _failing_writer(getattr(module, name)))
    with pytest.raises((OSError, CheckpointError)):
        save(tmp_path, seed=1)
    assert digest(good) == before
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_full_disk_keeps_the_previous_checkpoint(kind, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: every write past 4 KiB fails with EFBIG."""
    save = WRITERS[kind][0]
    good = save(tmp_path, seed=0)
    before = digest(good)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises((OSError, CheckpointError, SafetensorError)):
            save(tmp_path, seed=1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert digest(good) == before
    _no_temporaries(tmp_path)
    if kind == "model-checkpoint":
        create_model(checkpoint=good)  # still loads


def test_a_successful_save_replaces_the_folder_whole(tmp_path):
    folder = _save_model(tmp_path, seed=0)
    (folder / "stale.txt").write_text("from an older save")
    _save_model(tmp_path, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    _no_temporaries(tmp_path)


# ---- whole commands in a subprocess: a file size limit, kill -9 and Ctrl-C ----------------------------------
def _ssmamba(args: list, prelude: str = "", fsize: int | None = None) -> subprocess.CompletedProcess:
    """``ssmamba ARGS`` in a fresh interpreter, after running ``prelude`` (e.g. a patch that kills the process)."""
    script = f"import sys\n{prelude}\nfrom ssmamba.cli import main\nmain(sys.argv[1:], prog_name='ssmamba')\n"

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=300)


def _copy_run(assets: Assets, tmp: Path) -> Path:
    return Path(shutil.copytree(assets.run, tmp / "run"))


def test_full_disk_during_a_training_run_is_one_line_and_keeps_the_run(assets, tmp_path):
    run = _copy_run(assets, tmp_path)
    # (config.yaml is small and rewritten on resume; in this copy it names the new --out)
    kept = [run / "best", run / "last", run / "training_state.pt", run / "history.json"]
    before = digest(*kept)
    # 200 KB: the log and config fit, the training state (about 1 MB) does not
    result = _ssmamba(assets.finetune_args(run, "--resume"), fsize=200_000)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "is the disk full" in lines[0] and "Traceback" not in result.stderr
    assert digest(*kept) == before
    _no_temporaries(run)


_KILL_IN_SAVE = """
import os, signal
from pathlib import Path

import ssmamba.io.pretrained as checkpoint_folder
real = checkpoint_folder.save_file
def save_file(state, path, **kwargs):
    real(state, path, **kwargs)
    Path(path).write_bytes(Path(path).read_bytes()[:100])
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint_folder.save_file = save_file
"""

_INTERRUPT_IN_STEP = """
import os, signal
# Ctrl-C as a terminal delivers it: a suite started in the background (nohup, `&`) passes SIGINT down ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
import ssmamba.train.engine as engine
real = engine.Trainer._train_step
def _train_step(self, batches):
    if self.state.step == 2:
        os.kill(os.getpid(), signal.SIGINT)
    return real(self, batches)
engine.Trainer._train_step = _train_step
"""


@pytest.mark.parametrize("fault,prelude,status", [
    pytest.param("kill -9 while saving the checkpoint", _KILL_IN_SAVE, -9, id="sigkill-while-saving"),
    pytest.param("Ctrl-C during a training step", _INTERRUPT_IN_STEP, 1, id="sigint-during-a-step")])
def test_an_interrupted_run_keeps_its_checkpoint_and_resumes(fault, prelude, status, assets, tmp_path):
    out = Path(shutil.copytree(assets.pre, tmp_path / "pre"))  # 1 epoch = 2 steps: checkpoint/ at step 2
    before = digest(out / "checkpoint")
    result = _ssmamba(assets.pretrain_args(out, "--resume", "--epochs", 2), prelude=prelude)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert digest(out / "checkpoint") == before, f"{fault} changed the last good checkpoint"
    create_model(checkpoint=out / "checkpoint")
    finished = cli(*assets.pretrain_args(out, "--resume", "--epochs", 2))
    assert finished.exit_code == 0, finished.output
    assert digest(out / "checkpoint") != before  # the resumed run went on and saved again
    _no_temporaries(out)


# ---- the rest of the guarantees, one at a time -------------------------------------------------------------
def test_debug_shows_the_traceback(assets, tmp_path):
    args = ["evaluate", "--checkpoint", assets.encoder, "--data", assets.manifest, "--out", tmp_path / "e"]
    assert "no classification head" in error_line(cli(*args))
    missing = tmp_path / "empty"
    missing.mkdir()
    result = cli("--debug", "evaluate", "--checkpoint", missing, "--data", assets.manifest, "--out", tmp_path / "e2")
    assert isinstance(result.exception, FileNotFoundError)  # raised, not turned into one line


def test_weights_only_refuses_a_crafted_state(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save({"model": Evil()}, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        engine.load_tensors(tmp_path / "training_state.pt")
    assert not (tmp_path / "pwned").exists()


def test_non_finite_outputs_name_the_checkpoint(assets):
    model = create_model(checkpoint=assets.checkpoint)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    loader = [(torch.rand(2, 3, 32, 32), torch.zeros(2))]
    with pytest.raises(NonFiniteOutputError, match=str(assets.checkpoint)):
        predict_proba(model, loader, progress=False)


def test_a_mil_head_with_nan_weights_is_refused(tmp_path):
    folder = _save_mil(tmp_path, seed=0)
    head, _ = load_mil_model(folder)
    state = {k: torch.full_like(v, float("nan")) for k, v in head.state_dict().items()}
    from safetensors.torch import save_file

    save_file(state, str(folder / "mil_model.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_mil_model(folder)


def _records(rows):
    return [Record(ImageFile(Path(p)), label, split) for p, label, split in rows]


def test_duplicates_and_two_labels_are_reported_with_counts(assets, caplog):
    a, b = sorted(assets.images.glob("benign/*.png"))[:2]
    rows = [(a, 0, "train"), (a, 0, "train"), (a, 0, "train"), (b, 0, "train"), (b, 1, "train")]
    with caplog.at_level(logging.WARNING, logger="ssmamba"):
        check_hygiene("m.csv", _records(rows))
    text = caplog.text
    assert "2 duplicate row(s)" in text and str(a) in text
    assert "1 image(s) carry more than one label" in text and str(b) in text


def test_leakage_is_counted_and_can_be_allowed(assets, caplog):
    a, b = sorted(assets.images.glob("benign/*.png"))[:2]
    rows = [(a, 0, "train"), (a, 0, "test"), (b, 0, "val"), (b, 0, "test")]
    with pytest.raises(DataLeakageError, match=r"2 image\(s\) appear in more than one split"):
        check_hygiene("m.csv", _records(rows))
    with caplog.at_level(logging.WARNING, logger="ssmamba"):
        check_hygiene("m.csv", _records(rows), allow_leakage=True)
    assert "allowed with --allow-leakage" in caplog.text


def test_evaluate_lists_skipped_files_in_its_run_folder(assets, tmp_path):
    rows = [line.split(",") for line in assets.manifest.read_text().splitlines()[1:]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    manifest = write_manifest(tmp_path / "m.csv", [tuple(r) for r in rows] + [(str(broken), "benign", "test")])
    result = cli("evaluate", "--checkpoint", assets.checkpoint, "--data", manifest, "--out", tmp_path / "e",
                 "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable file(s)" in result.output
    assert str(broken) in (tmp_path / "e" / "skipped.csv").read_text()


def test_overwrite_replaces_a_finished_run(assets, tmp_path):
    run = _copy_run(assets, tmp_path)
    (run / "from_the_old_run.txt").write_text("x")
    result = cli(*assets.finetune_args(run, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not (run / "from_the_old_run.txt").exists() and (run / "best" / "model.safetensors").is_file()


def test_finetune_lists_skipped_files_in_its_run_folder(assets, tmp_path):
    rows = [line.split(",") for line in assets.manifest.read_text().splitlines()[1:]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    manifest = write_manifest(tmp_path / "m.csv", [tuple(r) for r in rows] + [(str(broken), "tumour", "train")])
    result = cli(*assets.finetune_args(tmp_path / "ft", "--data", manifest))
    assert result.exit_code == 0, result.output
    assert str(broken) in (tmp_path / "ft" / "skipped.csv").read_text()
    assert "skipped 1 unreadable file(s)" in (tmp_path / "ft" / "log.txt").read_text()


def test_an_attempt_that_failed_before_work_does_not_block_the_next(assets, tmp_path):
    rows = [tuple(line.split(",")) for line in assets.manifest.read_text().splitlines()[1:]]
    leaky = write_manifest(tmp_path / "m.csv", rows + [(rows[0][0], rows[0][1], "test")])
    out = tmp_path / "ft"
    assert "--allow-leakage" in error_line(cli(*assets.finetune_args(out, "--data", leaky)))
    assert sorted(p.name for p in out.iterdir()) == ["log.txt"]
    result = cli(*assets.finetune_args(out, "--data", leaky, "--allow-leakage"))
    assert result.exit_code == 0, result.output
