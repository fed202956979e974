"""Safe writing: atomic files and checkpoint folders, and the guard on run folders."""

from ssmamba.io.atomic import atomic_directory, atomic_write_text
from ssmamba.io.runs import claim_run_dir, write_skipped

__all__ = ["atomic_directory", "atomic_write_text", "claim_run_dir", "write_skipped"]
