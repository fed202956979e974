"""Warnings on the command line are one clean line, and importing the library leaves warnings alone."""

from __future__ import annotations

import warnings

import click
from click.testing import CliRunner

from ssmamba.cli import main
from ssmamba.cli.console import format_warning


def test_format_is_one_line_without_source():
    assert format_warning(UserWarning("random weights"), UserWarning) == "warning: random weights"
    assert format_warning("old", DeprecationWarning) == "warning (DeprecationWarning): old"


def test_importing_the_cli_does_not_touch_warnings():
    import importlib

    import ssmamba.cli

    before = warnings.showwarning
    importlib.reload(ssmamba.cli)
    assert warnings.showwarning is before


def test_a_warning_inside_a_command_prints_cleanly_and_the_hook_is_removed_after(monkeypatch):
    @click.command("warn-me")
    def warn_me() -> None:
        warnings.warn("features are only good for testing", UserWarning)

    monkeypatch.setattr(type(main), "get_command", lambda self, ctx, name: warn_me)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        result = CliRunner().invoke(main, ["warn-me"])
        assert warnings.showwarning is before
    assert result.exit_code == 0, result.output
    assert result.output == "warning: features are only good for testing\n"
    assert "UserWarning" not in result.output and "warnings.warn(" not in result.output
