"""Which exceptions are user errors, and their one-line message.

The ``ssmamba`` group turns them into ``click.ClickException`` (printed as ``Error: ...``, exit status 1);
``ssmamba --debug`` lets them propagate with their traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno

from ssmamba.errors import SsmambaError

__all__ = ["user_errors", "one_line"]

_FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "fix the input": ours, the library's bad-value/missing-file errors, OS errors."""
    from safetensors import SafetensorError  # a failed read or write of weights (truncated file, full disk)

    from ssmamba.models.factory import CheckpointMismatchError
    from ssmamba.train.engine import NonFiniteLossError

    return SsmambaError, CheckpointMismatchError, NonFiniteLossError, SafetensorError, ValueError, OSError


def one_line(error: BaseException) -> str:
    """The error's message on one line; an OS error names its file, and a full disk says what was kept."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        text = f"{where}{error.strerror}"
        if error.errno in _FULL_DISK:
            text += (" (disk full or file size limit); nothing half-written was kept, the previous checkpoints "
                     "are intact. Free space and rerun (with --resume for a training run)")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
