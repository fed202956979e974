"""Shared helpers for the benchmark scripts: median timing, peak memory, isolated runs, markdown results.

Peak memory of a CPU run: the process's peak resident set size (Linux VmHWM) is reset just before the measured
code (writing 5 to /proc/self/clear_refs) and read after it; "extra" = peak − resident size at the reset. Where
that reset is unavailable the lifetime peak (ru_maxrss) is used, which is only meaningful in a fresh process:
run each case with `run_isolated`. On CUDA, torch.cuda.max_memory_allocated after resetting the peak stats.
Free heap memory is returned to the OS before each measurement (glibc malloc_trim), so cases measured one after
another in the same process do not hide their peaks in memory an earlier case freed.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

MIB = 2**20


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, sync_cuda: bool = False,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of `repeats` calls of `fn` after `warmup` untimed ones: wall time, or CPU time with
    ``clock=time.process_time``."""

    def call() -> None:
        fn()
        if sync_cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times)


def _return_free_heap_to_os() -> None:
    """glibc keeps freed heap memory resident; a case could then reuse what an earlier one freed without raising
    the resident size, and its peak would read too low. malloc_trim(0) hands those free pages back first."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.extra_bytes`: the most memory the block held beyond what
    was held when it started (resident memory on CPU, allocated memory on CUDA)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.extra_bytes = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        _return_free_heap_to_os()
        self._start = (_proc_status_kib("VmRSS") or 0) * 1024
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets VmHWM to the current resident size
            self.method = "Linux VmHWM, reset at the start of the block"
        except OSError:
            self.method = "ru_maxrss (lifetime peak; use a fresh process per case)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("Linux"):
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        self.extra_bytes = max(0, peak - self._start)


def run_isolated(argv: Sequence[str], timeout: float | None = None) -> dict:
    """Run a benchmark case in a fresh Python process (clean allocator, honest peak memory) and return the JSON
    object it prints on its last line of stdout. Raises RuntimeError with the child's stderr if it fails."""
    result = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        command = " ".join(argv)
        raise RuntimeError(f"benchmark case {command} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


def case_in_child(module: str, function: str, args: dict, src: Path, threads: int = 1,
                  wait_policy: str | None = "PASSIVE") -> dict:
    """``benchmarks/<module>.<function>(**args)`` in a fresh process on the ssmamba of ``src``, with ``threads``
    OpenMP threads and ``wait_policy`` (None: OpenMP's default), ``import torch, timm`` first like a user script;
    returns its JSON result (the last line it prints)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYTHONPATH")}
    env |= {"PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    code = (f"import torch, timm, json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {module}; "
            f"print(json.dumps({module}.{function}(**{args!r})))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{module}.{function}({args}) on {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are printed as given, so format them before."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_lines() -> list[str]:
    """Where and when a result was measured."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} threads",
        f"- CPU: {_cpu_model()} ({os.cpu_count()} logical cores, capability {torch.backends.cpu.get_cpu_capability()});"
        f" GPU: {gpu}",
    ]


def write_result(path: Path, title: str, command: str, table: str, notes: Sequence[str] = ()) -> None:
    """Write a results file: title, exact command, environment, table, notes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"# {title}", "", f"Command: `{command}`", "", *environment_lines(), "", table, ""]
    if notes:
        body += [f"- {note}" for note in notes] + [""]
    path.write_text("\n".join(body))


def write_markdown_and_json(results: Path, stem: str, lines: Sequence[str], payload: dict) -> Path:
    """``results/<stem>.md`` (the lines) and ``results/<stem>.json`` (the payload); returns the Markdown path."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.md").write_text("\n".join(lines))
    (results / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {results / f'{stem}.md'}")
    return results / f"{stem}.md"


def read_section(path: Path, heading: str) -> str | None:
    """The body of the ``## heading`` section of a markdown file (up to the next ``## ``), or None."""
    if not path.exists():
        return None
    text = path.read_text()
    marker = f"\n## {heading}\n"
    if marker not in text:
        return None
    body = text.split(marker, 1)[1]
    return body.split("\n## ", 1)[0].strip("\n")


def replace_section(path: Path, heading: str, body: str) -> None:
    """Write `body` as the ``## heading`` section of a markdown file: replaced in place, or appended."""
    text = path.read_text() if path.exists() else ""
    marker = f"\n## {heading}\n"
    if marker in text:
        before, rest = text.split(marker, 1)
        after = rest.split("\n## ", 1)
        text = before + marker + "\n" + body + "\n" + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n" + marker + "\n" + body + "\n"
    path.write_text(text)
