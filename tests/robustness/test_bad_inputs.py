"""Bad inputs and faults, one table row each, through the command line in-process.

Every row builds its input (from the shared assets, copied before being broken), runs one command and asserts
three things: the exit status, the one ``Error:`` line (no traceback), and that the files the row names as
already written are byte-for-byte unchanged. Rows marked "before work" also check that no training started.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robust_helpers import Assets, cli, digest, error_line, write_manifest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@dataclass
class Case:
    """``build(assets, tmp) -> (argv, paths that must not change)``; the command must exit with ``code`` and, when
    it fails, print exactly one ``Error:`` line containing ``message`` (for ``code == 0``: ``message`` is in the
    output). ``check(assets, tmp)`` asserts more afterwards."""

    build: Callable[[Assets, Path], tuple[list, list[Path]]]
    code: int
    message: str
    check: Callable[[Assets, Path], None] | None = field(default=None)


# ---- builders of broken things -----------------------------------------------------------------------------
def _checkpoint(a: Assets, tmp: Path, config=None, state=None, source: Path | None = None) -> Path:
    """A copy of the 2-class checkpoint with ``config(dict)`` / ``state(dict)`` applied to config.json / weights."""
    target = tmp / "ckpt"
    shutil.copytree(source or a.checkpoint, target)
    if config is not None:
        cfg = json.loads((target / "config.json").read_text())
        config(cfg)
        (target / "config.json").write_text(json.dumps(cfg))
    if state is not None:
        weights = load_file(str(target / "model.safetensors"))
        state(weights)
        save_file(weights, str(target / "model.safetensors"))
    return target


def _fill(value: float, key_part: str = ""):
    def edit(state: dict) -> None:
        for key in [k for k in state if key_part in k and state[k].is_floating_point()][:1]:
            state[key] = torch.full_like(state[key], value)
    return edit


def _manifest(a: Assets, tmp: Path, edit) -> Path:
    """A copy of the manifest rows (path, label, split) passed through ``edit(rows) -> rows``."""
    rows = [line.split(",") for line in a.manifest.read_text().splitlines()[1:]]
    return write_manifest(tmp / "manifest.csv", [tuple(r) for r in edit(rows)])


def _copy(path: Path, tmp: Path) -> Path:
    target = tmp / ("copy_" + path.name)
    (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
    return target


def _predict(ck, inputs, tmp, *extra):
    return ["predict", "--checkpoint", ck, inputs, "--out", tmp / "pred.csv", *extra]


def _evaluate(ck, data, tmp, *extra):
    return ["evaluate", "--checkpoint", ck, "--data", data, "--out", tmp / "eval", "--bootstrap", 0, *extra]


def _no_predictions(a: Assets, tmp: Path) -> None:
    assert not (tmp / "pred.csv").exists()


def _not_started(a: Assets, tmp: Path) -> None:
    assert not list(tmp.rglob("training_state.pt")), "training started"


def _half(path: Path, tmp: Path, name: str) -> Path:
    data = path.read_bytes()
    (tmp / name).write_bytes(data[: len(data) // 2])
    return tmp / name


class _Evil:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _resume_with_state(a: Assets, tmp: Path, write, name="training_state.pt", *extra):
    run = _copy(a.run, tmp)
    write(run / name, tmp / "pwned")
    return a.finetune_args(run, "--resume", *extra), [run / "best", run / "last", run / "config.yaml"]


def _legacy_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))


def _zip_pickle(path: Path, marker: Path) -> None:
    torch.save({"model": _Evil(marker)}, path)


def _truncated_state(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _marker_absent(a: Assets, tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "a crafted training state ran code"


def _hygiene_manifest(edit):
    return lambda a, tmp: (_evaluate(a.checkpoint, _manifest(a, tmp, edit), tmp), [])


def _leak_by_path(rows):
    return rows + [(rows[0][0], rows[0][1], "test")]


def _leak_by_copy(a: Assets, tmp: Path):
    """A manifest whose test split holds a renamed copy of a training image."""
    def edit(rows):
        copy = shutil.copy(rows[0][0], tmp / "renamed.png")
        return rows + [(str(copy), rows[0][1], "test")]
    return _evaluate(a.checkpoint, _manifest(a, tmp, edit), tmp), []


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png_bytes(a: Assets) -> bytes:
    return next(a.images.glob("benign/*.png")).read_bytes()


def _folder_with(tmp: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        _write(tmp / "inputs" / name, data)
    (tmp / "inputs").mkdir(exist_ok=True)
    return tmp / "inputs"


def _skipped_listed(a: Assets, tmp: Path) -> None:
    listed = (tmp / "pred.skipped.csv").read_text().splitlines()
    assert len(listed) == 2 and "broken.png" in listed[1]
    assert len((tmp / "pred.csv").read_text().splitlines()) == 3  # header + the 2 readable images


def _run_guard(command_args):
    """A finished run given as --out to a command that would write there: refused, nothing changed."""
    def build(a: Assets, tmp: Path):
        run = _copy(a.run, tmp)
        return command_args(a, run, tmp), [run]
    return build


def _slides(tmp: Path, name: str, data: bytes | None = None) -> Path:
    """A folder holding one slide file: ``data`` as is, or (None) a 256 px TIFF without any µm/px metadata."""
    import numpy as np
    import tifffile

    path = tmp / "slides" / name
    path.parent.mkdir()
    if data is None:
        tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8))
    else:
        path.write_bytes(data)
    return path.parent


def _tile(slides: Path, tmp: Path, *extra) -> list:
    return ["wsi", "tile", slides, "--out", tmp / "wsi", "--mpp", 0.5, *extra]


def _cwd_overwrite(a: Assets, tmp: Path):
    work = tmp / "work"
    (work / "keep.txt").parent.mkdir()
    (work / "keep.txt").write_text("precious")
    os.chdir(work)
    return a.finetune_args(Path("."), "--overwrite"), [work / "keep.txt"]


CASES = {
    # ---- images given to predict ----
    "predict-truncated-png": Case(lambda a, t: (_predict(a.checkpoint, _half(next(a.images.glob("benign/*.png")), t,
                                                                                 "cut.png"), t), []),
                                  1, "cannot read image", _no_predictions),
    "predict-zero-byte-image": Case(lambda a, t: (_predict(a.checkpoint, _write(t / "empty.png", b""), t), []),
                                    1, "cannot read image", _no_predictions),
    "predict-text-named-png": Case(lambda a, t: (_predict(a.checkpoint, _write(t / "x.png", b"hello"), t), []),
                                   1, "cannot read image", _no_predictions),
    "predict-empty-folder": Case(lambda a, t: (_predict(a.checkpoint, _folder_with(t, {}), t), []),
                                 1, "no image files", _no_predictions),
    "predict-only-unreadable": Case(lambda a, t: (_predict(a.checkpoint, _folder_with(
        t, {"a.png": b"", "b.png": b"\x89PNG\r\n\x1a\nbroken"}), t), []), 1, "no readable", _no_predictions),
    "predict-skips-and-lists-unreadable": Case(lambda a, t: (_predict(a.checkpoint, _folder_with(
        t, {"ok1.png": _png_bytes(a), "ok2.png": _png_bytes(a), "broken.png": b"\x89PNG\r\n\x1a\nx"}), t), []),
        0, "skipped 1 unreadable file", _skipped_listed),
    "predict-existing-output": Case(lambda a, t: (_predict(a.checkpoint, a.images, t),
                                                  [_write(t / "pred.csv", b"earlier predictions\n")]),
                                    1, "already exists"),
    "predict-output-under-a-file": Case(lambda a, t: (
        ["predict", "--checkpoint", a.checkpoint, a.images, "--out", _write(t / "f", b"x") / "p.csv"], [t / "f"]),
        1, "cannot write"),
    "predict-headless-checkpoint": Case(lambda a, t: (_predict(a.encoder, a.images, t), []),
                                        1, "no classification head", _no_predictions),
    # ---- checkpoints ----
    "predict-nan-weights": Case(lambda a, t: (_predict(_checkpoint(a, t, state=_fill(float("nan"))), a.images, t),
                                              [t / "ckpt"]), 1, "non-finite (NaN/inf) weights", _no_predictions),
    "evaluate-inf-weights": Case(lambda a, t: (_evaluate(_checkpoint(a, t, state=_fill(float("inf"), "head")),
                                                         a.manifest, t), [t / "ckpt"]), 1, "non-finite"),
    "predict-overflowing-outputs": Case(lambda a, t: (_predict(_checkpoint(a, t, state=_fill(3e38, "head.weight")),
                                                               a.images, t), [t / "ckpt"]),
                                        1, "non-finite (NaN/inf) outputs", _no_predictions),
    "predict-three-names-two-outputs": Case(lambda a, t: (_predict(_checkpoint(a, t, config=lambda c: c[
        "pretrained_cfg"].update(class_names=["a", "b", "c"])), a.images, t), [t / "ckpt"]),
        1, "3 class_names", _no_predictions),
    "predict-duplicate-class-names": Case(lambda a, t: (_predict(_checkpoint(a, t, config=lambda c: c[
        "pretrained_cfg"].update(class_names=["a", "a"])), a.images, t), [t / "ckpt"]), 1, "distinct strings"),
    "evaluate-no-weights": Case(lambda a, t: (_evaluate(_unlink(_checkpoint(a, t), "model.safetensors"), a.manifest,
                                                        t), []), 1, "no weights file"),
    "evaluate-truncated-weights": Case(lambda a, t: (_evaluate(_truncate(_checkpoint(a, t), "model.safetensors"),
                                                               a.manifest, t), []), 1, "cannot read weights"),
    "evaluate-wrong-shape-weights": Case(lambda a, t: (_evaluate(_checkpoint(a, t, state=lambda s: s.update(
        {k: torch.zeros(3, *v.shape[1:]) for k, v in s.items() if k.startswith("head.") and v.ndim})),
        a.manifest, t), []), 1, "does not fit"),
    "evaluate-foreign-weights": Case(lambda a, t: (_evaluate(_foreign(_checkpoint(a, t)), a.manifest, t), []),
                                     1, "does not fit"),
    "evaluate-missing-config": Case(lambda a, t: (_evaluate(_unlink(_checkpoint(a, t), "config.json"), a.manifest,
                                                            t), []), 1, "no config.json"),
    "evaluate-invalid-json-config": Case(lambda a, t: (_evaluate(_replace(_checkpoint(a, t), "config.json", b"{oops"),
                                                                 a.manifest, t), []), 1, "not valid JSON"),
    "evaluate-config-without-architecture": Case(lambda a, t: (_evaluate(_checkpoint(
        a, t, config=lambda c: c.pop("architecture")), a.manifest, t), []), 1, "no \"architecture\""),
    "evaluate-unknown-architecture": Case(lambda a, t: (_evaluate(_checkpoint(
        a, t, config=lambda c: c.update(architecture="ssmamba_huge_typo")), a.manifest, t), []), 1, "unknown model"),
    "evaluate-unknown-model-args-key": Case(lambda a, t: (_evaluate(_checkpoint(
        a, t, config=lambda c: c["model_args"].update(warp_drive=True)), a.manifest, t), []),
        1, "not SSMambaConfig fields"),
    "evaluate-headless-checkpoint": Case(lambda a, t: (_evaluate(a.encoder, a.manifest, t), []),
                                         1, "no classification head"),
    # ---- manifests and data hygiene ----
    "evaluate-label-never-seen": Case(_hygiene_manifest(lambda rows: rows + [(rows[0][0], "necrosis", "test")]),
                                      1, "not one of the classes"),
    "evaluate-empty-split": Case(_hygiene_manifest(lambda rows: [r for r in rows if r[2] != "test"]),
                                 1, "split 'test' is empty"),
    "evaluate-same-path-in-train-and-test": Case(_hygiene_manifest(_leak_by_path), 1, "more than one split"),
    "evaluate-copied-image-in-train-and-test": Case(_leak_by_copy, 1, "more than one split"),
    "evaluate-leakage-allowed": Case(lambda a, t: (_evaluate(a.checkpoint, _manifest(a, t, _leak_by_path), t,
                                                             "--allow-leakage"), []), 0, "benign"),
    "finetune-leakage": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _manifest(a, t, _leak_by_path)), []),
                             1, "--allow-leakage", _not_started),
    "finetune-one-class": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _manifest(
        a, t, lambda rows: [(p, "benign", s) for p, _, s in rows])), []), 1, "at least 2 classes", _not_started),
    "finetune-partial-split-column": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _manifest(
        a, t, lambda rows: [(p, label, "" if i == 0 else s) for i, (p, label, s) in enumerate(rows)])), []),
        1, "unknown split ''", _not_started),
    "finetune-manifest-without-path-column": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _write(
        t / "m.csv", b"name,label\na.png,x\n")), []), 1, "path", _not_started),
    "finetune-empty-manifest": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _write(t / "m.csv", b"")), []),
                                    1, "m.csv: empty CSV", _not_started),
    "finetune-manifest-of-missing-files": Case(lambda a, t: (a.finetune_args(t / "ft", "--data", _manifest(
        a, t, lambda rows: [(str(t / f"gone{i}.png"), label, s) for i, (_, label, s) in enumerate(rows)])), []),
        1, "16 missing file(s) were skipped", _not_started),
    # ---- CLI values (rejected before any data is read) ----
    "finetune-invalid-monitor": Case(lambda a, t: (a.finetune_args(t / "ft", "--monitor", "bogus"), []),
                                     1, "--monitor 'bogus' is not a validation metric; choose one of balanced_accuracy",
                                     lambda a, t: _absent(t / "ft")),
    "finetune-zero-epochs": Case(lambda a, t: (a.finetune_args(t / "ft", "--epochs", 0), []),
                                 1, "--epochs must be > 0", lambda a, t: _absent(t / "ft")),
    "finetune-negative-batch-size": Case(lambda a, t: (a.finetune_args(t / "ft", "--batch-size", -4), []),
                                         1, "--batch-size must be > 0", lambda a, t: _absent(t / "ft")),
    "finetune-inverted-zoom": Case(lambda a, t: (a.finetune_args(t / "ft", "--zoom-min", 2), []),
                                   1, "--zoom-min 2.0 is larger than --zoom-max", lambda a, t: _absent(t / "ft")),
    "finetune-unknown-model-arg": Case(lambda a, t: (a.finetune_args(t / "ft", "--model-args", "warp=1"), []),
                                       1, "unknown model argument(s) ['warp']", _not_started),
    "finetune-unknown-architecture": Case(lambda a, t: (a.finetune_args(t / "ft", "--model", "resnet_typo"), []),
                                          1, "unknown model 'resnet_typo'", _not_started),
    "pretrain-zero-mask-patch": Case(lambda a, t: (a.pretrain_args(t / "pre", "--mask-patch-size", 0), []),
                                     1, "--mask-patch-size must be > 0", lambda a, t: _absent(t / "pre")),
    "pretrain-mask-patch-not-dividing": Case(lambda a, t: (a.pretrain_args(t / "pre", "--mask-patch-size", 12), []),
                                             1, "multiple of 32 and of mask_patch_size 12",
                                             lambda a, t: _absent(t / "pre")),
    "pretrain-mask-ratio-above-one": Case(lambda a, t: (a.pretrain_args(t / "pre", "--mask-ratio", 1.5), []),
                                          1, "--mask-ratio must be in (0, 1)", lambda a, t: _absent(t / "pre")),
    "pretrain-config-not-a-mapping": Case(lambda a, t: (a.pretrain_args(t / "pre", "--config", _write(
        t / "c.yaml", b"- 1\n- 2\n")), []), 2, "must hold a mapping"),
    "pretrain-config-invalid-yaml": Case(lambda a, t: (a.pretrain_args(t / "pre", "--config", _write(
        t / "c.yaml", b"epochs: [1\n")), []), 2, "not valid YAML"),
    "pretrain-config-unknown-key": Case(lambda a, t: (a.pretrain_args(t / "pre", "--config", _write(
        t / "c.yaml", b"epochz: 3\n")), []), 2, "epochz"),
    "pretrain-model-args-without-equals": Case(lambda a, t: (a.pretrain_args(t / "pre", "--model-args", "lpr"), []),
                                               2, "expected KEY=VALUE"),
    "pretrain-empty-folder": Case(lambda a, t: (a.pretrain_args(t / "pre", "--data", _folder_with(t, {})), []),
                                  1, "inputs: no image files", _not_started),
    "demo-invalid-mask-patch": Case(lambda a, t: (["demo", "--out", t / "demo", "--mask-patch-size", 24], []),
                                    1, "mask_patch_size 24", lambda a, t: _absent(t / "demo")),
    # ---- slides ----
    "wsi-tile-garbage-tiff": Case(lambda a, t: (_tile(_slides(t, "bad.tif", b"II*\x00garbage"), t), []),
                                  1, "bad.tif: cannot be opened as a slide or image"),
    "wsi-tile-zero-byte-svs": Case(lambda a, t: (_tile(_slides(t, "empty.svs", b""), t), []),
                                   1, "empty.svs: cannot be opened as a slide or image"),
    "wsi-tile-slide-without-mpp": Case(lambda a, t: (_tile(_slides(t, "nompp.tif"), t), []),
                                       1, "no plausible µm per pixel in the metadata"),
    "wsi-tile-negative-mpp": Case(lambda a, t: (_tile(_slides(t, "nompp.tif"), t, "--mpp", -1, "--slide-mpp", 0.5),
                                                []), 2, "target_mpp must be positive"),
    # ---- run folders: never silently reused ----
    "finetune-into-finished-run": Case(_run_guard(lambda a, run, t: a.finetune_args(run)), 1,
                                       "already holds files"),
    "pretrain-into-finished-run": Case(_run_guard(lambda a, run, t: a.pretrain_args(run)), 1, "--overwrite"),
    "evaluate-into-finished-run": Case(_run_guard(lambda a, run, t: [
        "evaluate", "--checkpoint", a.checkpoint, "--data", a.manifest, "--out", run]), 1, "already holds files"),
    "probe-into-finished-run": Case(_run_guard(lambda a, run, t: [
        "probe", "--encoder", a.encoder, "--data", a.manifest, "--out", run]), 1, "already holds files"),
    "demo-into-finished-run": Case(_run_guard(lambda a, run, t: ["demo", "--out", run, "--model", "ssmamba_test"]),
                                   1, "already holds files"),
    "mil-train-into-finished-run": Case(_run_guard(lambda a, run, t: [
        "mil", "train", "--csv", a.manifest, "--features", a.images, "--out", run]), 1, "already holds files"),
    "resume-and-overwrite-together": Case(_run_guard(lambda a, run, t: a.finetune_args(run, "--resume",
                                                                                        "--overwrite")),
                                          1, "give only one"),
    "resume-a-missing-folder": Case(lambda a, t: (a.finetune_args(t / "nothing", "--resume"), []),
                                    1, "does not exist"),
    "resume-without-training-state": Case(lambda a, t: (a.finetune_args(_unlink(_copy(a.run, t), "training_state.pt"),
                                                                        "--resume"), [t / "copy_run" / "best"]),
                                          1, "no training_state.pt"),
    "resume-crafted-legacy-pickle": Case(lambda a, t: _resume_with_state(a, t, _legacy_pickle), 1,
                                         "weights_only=True", _marker_absent),
    "resume-crafted-zip-pickle": Case(lambda a, t: _resume_with_state(a, t, _zip_pickle), 1,
                                      "weights_only=True", _marker_absent),
    "resume-truncated-training-state": Case(lambda a, t: _resume_with_state(a, t, _truncated_state), 1,
                                            "refusing to load"),
    "resume-crafted-ema-state": Case(lambda a, t: _resume_with_state(a, t, _zip_pickle, "ema_state.pt", "--ema"), 1,
                                     "ema_state.pt", _marker_absent),
    "out-is-a-file": Case(lambda a, t: (a.finetune_args(_write(t / "f", b"keep")), [t / "f"]), 1, "is a file"),
    "out-under-a-file": Case(lambda a, t: (a.finetune_args(_write(t / "f", b"keep") / "run"), [t / "f"]),
                             1, "cannot write"),
    "overwrite-the-working-folder": Case(_cwd_overwrite, 1, "would delete"),
}


def _unlink(folder: Path, name: str) -> Path:
    (folder / name).unlink()
    return folder


def _truncate(folder: Path, name: str) -> Path:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 3])
    return folder


def _replace(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _foreign(folder: Path) -> Path:
    save_file({"something.else": torch.zeros(3)}, str(folder / "model.safetensors"))
    return folder


def _absent(path: Path) -> None:
    assert not path.exists(), f"{path} was created before the options were checked"


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in CASES.items()])
def test_bad_input(case: Case, assets: Assets, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # rows that change the working folder get it back afterwards
    argv, protected = case.build(assets, tmp_path)
    before = digest(*protected, assets.root)
    result = cli(*argv)
    assert result.exit_code == case.code, f"{result.output}\n{result.exception!r}"
    if case.code:
        assert case.message in error_line(result)
    else:
        assert case.message in result.output
    assert digest(*protected, assets.root) == before, "something already written was changed"
    if case.check is not None:
        case.check(assets, tmp_path)


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40
