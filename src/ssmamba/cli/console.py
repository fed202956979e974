"""Console output for the commands: warnings as one clean line, the step log without a progress bar."""

from __future__ import annotations

import logging
import warnings

import click


def console_logging(progress: bool) -> None:
    logger = logging.getLogger("ssmamba")
    if any(getattr(h, "_ssmamba_console", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler._ssmamba_console = True
    handler.setLevel(logging.WARNING if progress else logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def format_warning(message: Warning | str, category: type[Warning]) -> str:
    """``warning: <message>``, naming the category unless it is a plain UserWarning; no file, line or source."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"warning{kind}: {message}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(format_warning(message, category), err=True)


def clean_warnings(ctx: click.Context) -> None:
    """Print warnings as :func:`format_warning` lines on stderr until ``ctx`` closes, then restore the previous
    ``warnings.showwarning``. Called by the command-line entry point only: importing ssmamba changes nothing."""
    previous = warnings.showwarning
    warnings.showwarning = _show_warning

    def restore() -> None:
        warnings.showwarning = previous

    ctx.call_on_close(restore)
