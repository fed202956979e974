"""Errors a user can fix (a bad file, option or folder). The command line prints their message as one
``Error:`` line (``ssmamba --debug`` shows the traceback); library callers catch :class:`SsmambaError`."""

from __future__ import annotations

__all__ = ["SsmambaError", "CheckpointError", "RunFolderError", "DataLeakageError", "NonFiniteOutputError"]


class SsmambaError(Exception):
    """Base of every error whose message tells the user what to change."""


class CheckpointError(SsmambaError):
    """A checkpoint (weights, config.json or training state) cannot be loaded safely; the message names it."""


class RunFolderError(SsmambaError):
    """The output folder holds another run, or cannot be written."""


class DataLeakageError(SsmambaError, ValueError):
    """The same image is in more than one split (pass ``allow_leakage`` to accept it)."""


class NonFiniteOutputError(SsmambaError):
    """A model produced NaN or infinite outputs; the message names the checkpoint."""
