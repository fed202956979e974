"""Fused C++ selective scan for CPU tensors, with its own backward.

The kernel (``csrc/selective_scan_cpu.cpp``; built into one extension with ``csrc/depthwise_cpu.cpp``, the depthwise
convolution's forward and gradients of :mod:`ssmamba.ops.depthwise`; ``csrc/simd.h`` is their shared SIMD code)
is compiled with ``torch.utils.cpp_extension.load``
the first time a scan runs, never at import, and cached in the torch extensions directory
(``TORCH_EXTENSIONS_DIR``). It saves only its inputs for the backward and recomputes the states there, so memory
stays O(inputs) instead of autograd's O(batch·dim·L·N). Environment: ``SSMAMBA_NO_BUILD=1`` never compiles (the
kernel then counts as unavailable).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

from ssmamba.ops.contract import as_grouped, check_scan_inputs, compute_dtype
from ssmamba.ops.directional import check_directional_inputs, direction_orders

NO_BUILD_ENV = "SSMAMBA_NO_BUILD"
# the selective scan and the depthwise convolution's kernels (ssmamba.ops.depthwise): one extension; the header is
# theirs, copied and hashed with them
_CSRC = Path(__file__).with_name("csrc")
_SOURCES = tuple(_CSRC / name for name in ("selective_scan_cpu.cpp", "depthwise_cpu.cpp"))
_HEADERS = (_CSRC / "simd.h",)


class ExtensionBuildError(RuntimeError):
    """The CPU kernel could not be compiled or loaded; the message carries the compiler log."""

    def __init__(self, summary: str, log: str = "") -> None:
        super().__init__(summary + (f"\n{log}" if log else ""))
        self.summary = summary


def instruction_set() -> tuple[str, list[str]]:
    """(flavour, compiler flags) for this CPU.

    Not ``-march=native``: the build is cached on disk under the flavour's name, and a cache built for one CPU must
    not be loaded on another. The flavour follows what PyTorch detected at run time (``ATEN_CPU_CAPABILITY``).
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return "generic", []  # aarch64 and others: the baseline SIMD unit (NEON) is always there
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"]
    if capability == "AVX2":
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def _compiler_flags() -> tuple[list[str], list[str]]:
    """(cflags, ldflags). OpenMP makes at::parallel_for actually run in parallel; Apple clang has no -fopenmp, so
    there the kernel runs on one thread. Plain IEEE maths: no -ffast-math. (MSVC cannot compile the kernel, which
    uses GCC/Clang vector extensions: on Windows `auto` falls back to ref with a warning.)"""
    if sys.platform == "win32":
        return ["/O2", "/openmp"], []
    if sys.platform == "darwin":
        return ["-O3"], []
    return ["-O3", "-fopenmp"], ["-fopenmp"]


@contextlib.contextmanager
def _quiet_cpp_extension_logger():
    # importing cpp_extension on a machine without CUDA logs a CUDA_HOME warning that means nothing for a CPU build
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _KernelLoader:
    """Builds and loads the kernel once per process; remembers a failure so it is not retried on every call."""

    def __init__(self) -> None:
        self.module: ModuleType | None = None
        self.error: ExtensionBuildError | None = None
        self._lock = threading.Lock()

    def status(self) -> tuple[bool, str]:
        """(available, why) without compiling anything."""
        flavour, _ = instruction_set()
        if self.module is not None:
            return True, f"fused C++ kernel ({flavour}) loaded"
        if self.error is not None:
            return False, f"build failed: {self.error.summary}"
        if os.environ.get(NO_BUILD_ENV) == "1":
            return False, f"{NO_BUILD_ENV}=1: compiling the kernel is disabled"
        compiler = os.environ.get("CXX", "cl" if sys.platform == "win32" else "c++")
        if shutil.which(compiler) is None:
            return False, f"no C++ compiler ('{compiler}' not on PATH; set CXX or install g++)"
        with _quiet_cpp_extension_logger():
            from torch.utils.cpp_extension import is_ninja_available
        if not is_ninja_available():
            return False, "ninja is not installed (pip install ninja)"
        return True, f"fused C++ kernel ({flavour}), compiled on first use and cached"

    def load(self) -> ModuleType:
        with self._lock:
            if self.module is not None:
                return self.module
            if self.error is not None:
                raise self.error
            if os.environ.get(NO_BUILD_ENV) == "1":
                raise ExtensionBuildError(f"{NO_BUILD_ENV}=1: compiling the CPU kernel is disabled")
            try:
                self.module = self._build()
            except ExtensionBuildError as error:
                self.error = error
                raise
            return self.module

    @staticmethod
    def _build() -> ModuleType:
        flavour, isa_flags = instruction_set()
        cflags, ldflags = _compiler_flags()
        with _quiet_cpp_extension_logger():
            from torch.utils.cpp_extension import load
        # One build per source *content*, compiled from a copy inside its own build folder: installs of the same
        # version in different places (checkouts, virtual environments) share it, and two different versions never
        # rebuild over each other (ninja rebuilds whenever the source path in its build file changes).
        codes = {path.name: path.read_bytes() for path in _SOURCES + _HEADERS}
        digest = hashlib.sha256(b"".join(name.encode() + code for name, code in codes.items())).hexdigest()[:12]
        name = f"ssmamba_selective_scan_cpu_{flavour}_{digest}"
        build_dir = _extensions_root() / name
        build_dir.mkdir(parents=True, exist_ok=True)
        sources = []
        for file_name, code in codes.items():
            source = build_dir / file_name
            if not source.is_file() or source.read_bytes() != code:
                tmp = source.with_name(f"{source.name}.{os.getpid()}.tmp")
                tmp.write_bytes(code)
                os.replace(tmp, source)  # atomic: a concurrent build never sees half a file
            if file_name.endswith(".cpp"):
                sources.append(str(source))
        try:
            return load(
                name=name,
                sources=sources,
                extra_cflags=cflags + isa_flags,
                extra_ldflags=ldflags,
                build_directory=str(build_dir),
                verbose=False,  # quiet on success; on failure torch puts the compiler output in the exception
            )
        except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as error:
            summary = f"compiling {', '.join(codes)} failed ({type(error).__name__})"
            raise ExtensionBuildError(summary, str(error)) from error


def _extensions_root() -> Path:
    """Where torch keeps JIT-compiled extensions: ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``
    (``$XDG_CACHE_HOME`` honoured), as ``torch.utils.cpp_extension`` does by default."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"


_loader = _KernelLoader()


def load_extension() -> ModuleType:
    """The compiled kernel module; compiles it on the first call (about a minute), raises ExtensionBuildError."""
    return _loader.load()


def extension_status() -> tuple[bool, str]:
    """(available, why) of the CPU kernel, without compiling it."""
    return _loader.status()


class _SelectiveScanCpu(torch.autograd.Function):
    """All tensors in one compute dtype (float32/float64); B, C grouped (batch, G, N, L)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        out, last_state = load_extension().forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as a tensor of zeros
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast_state):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        with torch.autocast("cpu", enabled=False):
            grads = load_extension().backward(
                u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, dout, dlast_state
            )
        return (*grads, None)  # du, ddelta, dA, dB, dC, dD, dz, ddelta_bias; nothing for the softplus flag


def selective_scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with the fused CPU kernel; same contract as `selective_scan_ref`.

    Inputs of any floating dtype are computed in float32 (float64 stays float64), also under autocast; the output
    has u's dtype. Raises ExtensionBuildError if the kernel cannot be built.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan: the 'cpu' backend needs CPU tensors, but `u` is on {u.device}")
    load_extension()  # fail here, before autograd sees anything
    dtype = compute_dtype(u)

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dtype)

    with torch.autocast("cpu", enabled=False):
        out, last_state = _SelectiveScanCpu.apply(
            cast(u), cast(delta), cast(A), cast(as_grouped(B)), cast(as_grouped(C)),
            cast(D), cast(z), cast(delta_bias), bool(delta_softplus),
        )  # fmt: skip
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


class _DirectionalScanCpu(torch.autograd.Function):
    """u, delta, B, C in one storage dtype (float32, bfloat16, float64); A, D, delta_bias in its compute dtype."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, orders, delta_softplus: bool):
        out = load_extension().directional_forward(u, delta, A, B, C, D, delta_bias, orders, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.orders, ctx.delta_softplus = orders, delta_softplus
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        grads = load_extension().directional_backward(
            u, delta, A, B, C, D, delta_bias, ctx.orders, ctx.delta_softplus, dout.to(u.dtype)
        )
        return (*grads, None, None)  # du, ddelta, dA, dB, dC, dD, ddelta_bias; nothing for orders and the flag


def directional_scan_cpu(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = False, *,
                         directions, height: int, width: int) -> torch.Tensor:  # fmt: skip
    """Directional scan with the fused CPU kernel; same contract as `directional_scan_ref`.

    Reads u, delta, B, C in place through each direction's order and their strides (channels-last tensors are
    the fast layout). float32 and bfloat16 inputs are read as they are and computed in float32, float64 in
    float64, anything else cast to float32; the output has u's dtype and layout. Raises ExtensionBuildError if the
    kernel cannot be built.
    """
    check_directional_inputs(u, delta, A, B, C, D, delta_bias, directions, height, width)
    if u.device.type != "cpu":
        raise ValueError(f"directional_scan: the 'cpu' backend needs CPU tensors, but `u` is on {u.device}")
    load_extension()
    storage = u.dtype if u.dtype in (torch.float32, torch.bfloat16, torch.float64) else torch.float32
    dtype = compute_dtype(u)

    def cast(t: torch.Tensor | None, to: torch.dtype) -> torch.Tensor | None:
        return None if t is None else t.to(to)

    with torch.autocast("cpu", enabled=False):
        out = _DirectionalScanCpu.apply(
            cast(u, storage), cast(delta, storage), cast(A, dtype), cast(B, storage), cast(C, storage),
            cast(D, dtype), cast(delta_bias, dtype), direction_orders(directions, height, width), bool(delta_softplus),
        )  # fmt: skip
    return out.to(u.dtype)
