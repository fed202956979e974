"""A run folder holds one run at a time: a second process given the same --out is refused before it reads or
deletes anything, and the lock goes with the process, so --resume works after a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ssmamba.errors import RunFolderError
from ssmamba.io.runs import run_lock
from ssmamba.train.setup import run_folder

pytest.importorskip("fcntl")  # POSIX only: elsewhere no lock is taken


def test_a_second_run_in_a_locked_folder_is_refused_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    with run_folder(out, resume=False, overwrite=False) as folder:
        (folder / "training_state.pt").write_text("the first run's state")
        with pytest.raises(RunFolderError, match=f"--out {out} is in use by another running process"):
            with run_folder(out, resume=False, overwrite=True):
                pass
        assert (folder / "training_state.pt").read_text() == "the first run's state"
    with run_folder(out, resume=True, overwrite=False) as folder:  # the lock went with the first run
        assert (folder / "training_state.pt").is_file()


def test_overwrite_empties_the_folder_it_holds_the_lock_on(tmp_path):
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a.txt").write_text("old")
    (out / "model.safetensors").write_text("old")
    with run_folder(out, resume=False, overwrite=True) as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["log.txt"]
        with pytest.raises(RunFolderError, match="in use"):
            with run_lock(out):
                pass


def test_the_lock_is_released_when_its_process_is_killed(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from ssmamba.io.runs import run_lock
        with run_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match="in use"):
            with run_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(out):  # a killed run leaves no stale lock behind
        pass


def test_resume_of_a_missing_folder_is_left_to_the_claim(tmp_path):
    with pytest.raises(RunFolderError, match="cannot resume"):
        with run_folder(tmp_path / "missing", resume=True, overwrite=False):
            pass
    assert not (tmp_path / "missing").exists()
