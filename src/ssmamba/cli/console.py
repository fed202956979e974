"""Console logging for the commands: warnings under a progress bar, the step log without one."""

from __future__ import annotations

import logging


def console_logging(progress: bool) -> None:
    logger = logging.getLogger("ssmamba")
    if any(getattr(h, "_ssmamba_console", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler._ssmamba_console = True
    handler.setLevel(logging.WARNING if progress else logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
