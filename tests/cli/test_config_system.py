"""One config system for every command: options rendered from a dataclass, ``--config FILE`` round trips, help
text on every option, and the renamed spellings of before the one vocabulary (still accepted, with a warning)."""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from ssmamba.cli import main
from ssmamba.cli.options import ConfigCommand, build_config, save_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _commands(group=main, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


ALL = dict(_commands())


def test_every_option_of_every_command_has_help_text():
    missing = [(" ".join(path), param.name) for path, command in ALL.items()
               for param in command.get_params(click.Context(command)) if isinstance(param, click.Option)
               and not (param.help or "").strip()]
    assert not missing


def test_every_command_that_writes_is_built_from_a_config_with_config_and_out():
    for path, command in ALL.items():
        if path == ("info",):  # prints facts about the installation; it has no options and writes nothing
            continue
        assert isinstance(command, ConfigCommand), path
        options = {opt for param in command.params for opt in getattr(param, "opts", ())}
        assert {"--config", "--out", "-o"} <= options, path


@pytest.fixture
def inputs(tmp_path):
    folder, table, image = tmp_path / "folder", tmp_path / "bags.csv", tmp_path / "image.png"
    folder.mkdir()
    table.write_text("slide_id,label\n")
    image.write_bytes(b"")
    return {"DIR": str(folder), "CSV": str(table), "FILE": str(image), "OUT": str(tmp_path / "out")}


# one invocation per command, with flags of every kind (required, list, KEY=VALUE, enum, flag, argument, -o)
FLAGS = {
    ("pretrain",): ["--data", "DIR", "--epochs", "2", "--model-args", "lpr=false", "--model-args", "directions=[row]",
                    "--img-size", "32", "--crop-size", "32", "--mask-patch-size", "8", "--no-hed", "-o", "OUT"],
    ("finetune",): ["--data", "DIR", "--init", "DIR", "--balance", "loss", "--img-size", "32", "--precision", "bf16"],
    ("demo",): ["--n-per-class", "5", "--img-size", "32", "--scratch-baseline", "-o", "OUT"],
    ("benchmark",): ["--data", "DIR", "--entries", "ssmamba,resnet18", "--seeds", "0", "--seeds", "3",
                     "--backbone-args", "conv_block=dense", "--magnifications", "0.5"],
    ("evaluate",): ["--checkpoint", "DIR", "--data", "CSV", "--group-column", "patient", "--tta", "-o", "OUT"],
    ("predict",): ["--checkpoint", "DIR", "FILE", "-o", "OUT", "--batch-size", "4"],
    ("probe",): ["--encoder", "ssmamba_test", "--weights", "DIR", "--data", "DIR", "--img-size", "32"],
    ("wsi", "tile"): ["FILE", "DIR", "-o", "OUT", "--mpp", "1.0", "--no-tissue-mask", "--stride", "100"],
    ("wsi", "extract"): ["DIR", "--encoder", "ssmamba_test", "--img-size", "64", "--slide-dir", "DIR"],
    ("wsi", "heatmap"): ["FILE", "--features", "FILE", "--pca", "-o", "OUT", "--scaling", "raw"],
    ("mil", "train"): ["--csv", "CSV", "--features", "DIR", "--head", "transmil", "--head-args", "dim=32",
                       "--folds", "3", "--balance", "none", "-o", "OUT"],
    ("mil", "evaluate"): ["--csv", "CSV", "--features", "DIR", "--heads", "DIR", "-o", "OUT", "--group-column", "case"],
}


def resolve(path: tuple[str, ...], args: list[str], inputs: dict):
    """The config ``ssmamba PATH ARGS`` would run with (the command line is read, nothing is run)."""
    command = ALL[path]
    ctx = command.make_context(path[-1], [inputs.get(a, a) for a in args])
    return ctx, build_config(command.config_class, ctx.params)


def test_every_command_is_covered():
    assert set(FLAGS) == set(ALL) - {("info",)}


@pytest.mark.parametrize("path", sorted(FLAGS), ids=" ".join)
def test_a_saved_resolved_config_gives_the_same_config_as_the_flags(path, inputs, tmp_path):
    ctx, from_flags = resolve(path, FLAGS[path], inputs)
    with ctx:
        saved = save_config(from_flags, tmp_path / "resolved.yaml")
    assert list(yaml.safe_load(saved.read_text())) == [path[-1]]
    _, from_file = resolve(path, ["--config", str(saved)], inputs)
    assert from_file == from_flags
    # a hand-written flat file works the same, and a flag on the command line wins over the file
    flat = yaml.safe_load(saved.read_text())[path[-1]]
    flat = {**flat, **flat.pop("bags", {})}
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    _, overridden = resolve(path, ["--config", str(tmp_path / "flat.yaml"), "--out", inputs["OUT"] + "2"], inputs)
    assert overridden.out == inputs["OUT"] + "2"
    overridden.out = from_flags.out
    assert overridden == from_flags


# old spelling -> new spelling, per command
RENAMED = [
    (("finetune",), ["--data", "DIR", "--checkpoint", "DIR"], ["--data", "DIR", "--init", "DIR"]),
    (("probe",), ["--encoder", "e", "--data", "DIR", "--checkpoint", "DIR"],
     ["--encoder", "e", "--data", "DIR", "--weights", "DIR"]),
    (("wsi", "extract"), ["DIR", "--encoder", "e", "--input-size", "64"], ["DIR", "--encoder", "e", "--img-size", "64"]),
    (("wsi", "extract"), ["DIR", "--encoder", "e", "--input-size=64"], ["DIR", "--encoder", "e", "--img-size", "64"]),
    (("wsi", "extract"), ["DIR", "--encoder", "e", "--checkpoint", "DIR"], ["DIR", "--encoder", "e", "--weights", "DIR"]),
    (("wsi", "heatmap"), ["FILE", "--features", "FILE", "-o", "m.png", "--model", "DIR"],
     ["FILE", "--features", "FILE", "-o", "m.png", "--heads", "DIR"]),
    (("mil", "train"), ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--patient-column", "case"],
     ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--group-column", "case"]),
    (("mil", "train"), ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--head-arg", "dim=8"],
     ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--head-args", "dim=8"]),
    (("mil", "train"), ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--no-balance"],
     ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--balance", "none"]),
    (("mil", "evaluate"), ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--model", "DIR"],
     ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--heads", "DIR"]),
    (("mil", "evaluate"), ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--heads", "DIR", "--patient-column", "p"],
     ["--csv", "CSV", "--features", "DIR", "-o", "OUT", "--heads", "DIR", "--group-column", "p"]),
]


@pytest.mark.parametrize("path, old, new", RENAMED, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_old_spellings_still_work_with_one_warning_line(path, old, new, inputs, capsys):
    _, expected = resolve(path, new, inputs)
    assert capsys.readouterr().err == ""
    _, got = resolve(path, old, inputs)
    assert got == expected
    (spelling,) = {word.partition("=")[0] for word in old if word.startswith("--") and word not in new}
    replacement = " ".join(ALL[path].renamed[spelling])
    assert capsys.readouterr().err == f"Warning: {spelling} is deprecated; use {replacement}\n"


def test_an_old_key_in_a_config_file_is_renamed_with_a_warning(inputs, tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"finetune": {"data": inputs["DIR"], "checkpoint": inputs["DIR"], "epochs": 2}}))
    _, cfg = resolve(("finetune",), ["--config", str(old)], inputs)
    assert cfg.init == inputs["DIR"] and cfg.epochs == 2
    assert capsys.readouterr().err == f"Warning: checkpoint (in {old}) is deprecated; use init\n"


def test_bad_config_files_are_one_error_line_naming_the_file(inputs, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1\n")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    for path, needle in ((broken, "is not valid YAML"), (listed, "must hold a mapping")):
        result = CliRunner().invoke(main, ["mil", "evaluate", "--config", str(path)])
        assert result.exit_code == 2
        (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert str(path) in error and needle in error
    result = CliRunner().invoke(main, ["wsi", "heatmap", inputs["FILE"], "--features", inputs["FILE"], "-o", "x.png"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "exactly one of" in result.output


def test_device_auto_is_saved_as_typed_so_a_config_runs_with_or_without_a_gpu(inputs):
    for path in (("evaluate",), ("mil", "train"), ("finetune",)):
        _, cfg = resolve(path, FLAGS[path], inputs)
        assert cfg.device == "auto"
