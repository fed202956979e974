"""What each CPU measure in the default model's training step buys: the step with one measure undone, in one process.

    python benchmarks/step_measures.py                     # 64 and 224 px, fp32 and bf16; about 5 minutes
    python benchmarks/step_measures.py --sizes 64 --repeats 5
    python benchmarks/step_measures.py --threads 2 --busy-core --results-name step_measures_2t   # speed.py's setting

Part 1: GELU forward + backward on the convolutional stages' channels-last maps at 224 px (batch 16), ``nn.GELU``
against ssmamba's layout-aware ``GELU`` (CPU time, median of 15). Part 2: the training step (``speed.py``'s:
forward, loss, backward, AdamW; channels-last) of the default model as it is, twice (two models built alike, a
control: how far identical variants drift apart), with each measure undone, with all of them undone, and
ResNet-18's, all in one process (one thread unless ``--threads``; with ``--busy-core`` a busy-loop process holds a
core meanwhile, as in ``speed.py``): every round runs each variant once in a shuffled order, and each variant's
time is its median over the rounds, so machine drift and the position in a round hit all alike. A measure is
undone by patching it out for the duration of that variant's steps only.
Writes ``benchmarks/results/step_measures.{md,json}`` (or ``--results-name``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment_lines, markdown_table, median_seconds, write_markdown_and_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GELU_SHAPES = [("stem", 24, 112), ("stage 1", 48, 56), ("stage 2", 96, 28)]  # (label, channels, side) at 224 px


@contextlib.contextmanager
def plain_gelu() -> Iterator[None]:
    """ssmamba's GELU as plain ``nn.GELU`` (PyTorch's own channels-last kernel)."""
    from ssmamba.models.ssmamba import GELU

    with _patched(GELU, "forward", torch.nn.GELU.forward):
        yield


@contextlib.contextmanager
def float32_mixer_activations() -> Iterator[None]:
    """The DMS mixer without its autocast casts: the depthwise conv's float32 output feeds the scan, so delta, B and
    C are cast to float32 for it and their gradients back, and each of in_proj's matmuls casts its input."""
    from ssmamba.models import dms

    with _patched(dms, "_in_autocast_dtype", lambda t: t):
        yield


@contextlib.contextmanager
def layer_scales_on_outputs() -> Iterator[None]:
    """HybridBlock's layer scales multiplying the (B, H, W, C) outputs of the mixer and the MLP, as before they were
    folded into out_proj's and fc2's weights."""
    from ssmamba.models.ssmamba import HybridBlock

    def forward(block, x):
        if block.lpr is not None:
            x = x + block.lpr(x)
        y = block.norm1(x)
        y = block.mixer(y.flatten(1, 2)).view_as(y) if block.use_attention else block.mixer(y)
        x = x + block.drop_path(block.gamma1 * y)
        return x + block.drop_path(block.gamma2 * block.mlp(block.norm2(x)))

    with _patched(HybridBlock, "forward", forward):
        yield


@contextlib.contextmanager
def layer_scales_always_in_weights() -> Iterator[None]:
    """The layer scales folded into out_proj's and fc2's weights even where the output is the smaller tensor (stage
    4 at 64 px: a 384 x 1536 weight against 256 x 384 outputs), as before ``dms.scaled_linear`` chose."""
    import torch.nn.functional as F

    from ssmamba.models import dms
    from ssmamba.models import ssmamba as network

    def folded(x, weight, bias, scale):
        if scale is None:
            return F.linear(x, weight, bias)
        return F.linear(x, scale[:, None] * weight, None if bias is None else scale * bias)

    with _patched(dms, "scaled_linear", folded), _patched(network, "scaled_linear", folded):
        yield


@contextlib.contextmanager
def scale_weight_on_output() -> Iterator[None]:
    """The DMS scale weight multiplying each scale's (B, E, H, W) scan output, as before it went into C and D."""
    from ssmamba.models.dms import _DirectionalScan

    forward = _DirectionalScan.forward

    def on_output(scan, x, scale=None):
        out = forward(scan, x)
        return out if scale is None else scale * out

    with _patched(_DirectionalScan, "forward", on_output):
        yield


@contextlib.contextmanager
def onednn_depthwise() -> Iterator[None]:
    """The depthwise convolutions as before our forward kernel: oneDNN's forward and input gradient in float32 (under
    autocast the input cast to float32, the output float32), over every tap of the padded 7x7; the weight gradient
    still ours (it was before too), also over every tap."""
    import torch.nn.functional as F

    from ssmamba.ops import depthwise
    from ssmamba.ops.scan_cpu import load_extension

    def conv(x, weight, bias):
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])

    class Previous(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight)
            return conv(x, weight, bias)

        @staticmethod
        def backward(ctx, grad_out):
            x, weight = ctx.saved_tensors
            grad_out = grad_out.contiguous(memory_format=torch.channels_last)
            grad_weight = load_extension().depthwise_weight_grad(x, grad_out, weight.shape[-1], None)
            return conv(grad_out, weight.flip(-1, -2), None), grad_weight, grad_out.sum((0, 2, 3))

    def previous(x, weight, bias, radii=None):
        with torch.autocast("cpu", enabled=False):
            return Previous.apply(x.float(), weight.float(), bias.float())

    with _patched(depthwise, "depthwise_conv2d_cpu", previous):
        yield


MEASURES: dict[str, tuple[Callable[[], contextlib.AbstractContextManager], bool]] = {
    # name -> (what undoes it, whether it acts under bf16 autocast only)
    "layout-aware GELU": (plain_gelu, False),
    "bf16 DMS activations under autocast": (float32_mixer_activations, True),
    "layer scales folded into weights": (layer_scales_on_outputs, False),
    "layer scales on the smaller tensor": (layer_scales_always_in_weights, False),
    "scale weight in C and D": (scale_weight_on_output, False),
    "depthwise forward kernels": (onednn_depthwise, False),
}


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def gelu_ms(channels: int, side: int, dtype: torch.dtype, module: torch.nn.Module, repeats: int = 15) -> float:
    x = torch.randn(16, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn_like(x)
    return 1e3 * median_seconds(lambda: torch.autograd.grad(module(x), x, grad), repeats, warmup=2,
                                clock=time.process_time)  # fmt: skip


def step_case(size: int, bf16: bool, repeats: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per training step of each variant, in shuffled rounds."""
    import timm

    from speed import training_step

    from ssmamba.models import create_model
    from ssmamba.train.config import DEFAULT_MODEL

    batch = 64 if size <= 96 else 16
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))
    measures = {name: undo for name, (undo, bf16_only) in MEASURES.items() if bf16 or not bf16_only}

    def variant(undone: list[str]) -> Callable[[], None]:
        torch.manual_seed(0)
        step = training_step(create_model(DEFAULT_MODEL, num_classes=4), x, y, bf16)

        def run() -> None:
            with contextlib.ExitStack() as stack:
                for name in undone:
                    stack.enter_context(measures[name]())
                step()

        return run

    # "as is, again": a second model built the same way, nothing undone: how far two identical variants drift
    # apart in the same rounds (memory placement, the order inside a round), the scale against which to read a measure
    steps = {"as is": variant([]), "as is, again": variant([])} | {
        f"without {name}": variant([name]) for name in measures}
    if len(measures) > 1:
        steps["without all"] = variant(list(measures))
    steps["resnet18"] = training_step(timm.create_model("resnet18", num_classes=4), x, y, bf16)
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order, rng = list(steps), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            start = time.process_time()
            steps[name]()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=15, help="rounds of the training-step comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--busy-core", action="store_true", help="a busy-loop process holds one core meanwhile")
    parser.add_argument("--results-name", default="step_measures", help="stem of the results files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import timm  # noqa: F401  (torch and timm before ssmamba, as a user script imports them)

    from ssmamba.models.ssmamba import GELU

    load_before = os.getloadavg()
    gelus, cases = [], []
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy_core else None
    try:
        for label, channels, side in GELU_SHAPES:
            for dtype in (torch.float32, torch.bfloat16):
                plain, ours = (gelu_ms(channels, side, dtype, m) for m in (torch.nn.GELU(), GELU()))
                gelus.append({"map": label, "channels": channels, "side": side, "dtype": str(dtype)[6:],
                              "plain_ms": plain, "ssmamba_ms": ours})  # fmt: skip
                print(f"GELU {label:8s} {str(dtype)[6:]:9s} nn.GELU {plain:6.2f} ms, ssmamba {ours:6.2f} ms",
                      flush=True)
        for size in args.sizes:
            for bf16 in (False, True):
                seconds = step_case(size, bf16, args.repeats)
                cases.append({"size": size, "bf16": bf16, "seconds": seconds})
                print(f"step {size} px {'bf16' if bf16 else 'fp32'}: " + ", ".join(
                    f"{name} {seconds['resnet18'] / s:.3f}x" for name, s in seconds.items()) + " ResNet-18",
                      flush=True)  # fmt: skip
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    variants = [name for name in cases[-1]["seconds"] if name != "resnet18"]
    defaults = {"sizes": [64, 224], "repeats": 15, "threads": 1, "busy_core": False, "results_name": "step_measures"}
    command = "python benchmarks/step_measures.py" + "".join(
        f" --{name.replace('_', '-')}" + ("" if value is True else f" {' '.join(map(str, value))}"
                                          if isinstance(value, list) else f" {value}")
        for name, value in vars(args).items() if value != defaults[name])
    lines = ["# The training step's CPU measures, one at a time", "",
             f"Command: `{command}`; {args.threads} thread(s)"
             f"{', a busy-loop process holding one core' if args.busy_core else ''}, CPU time, "
             "OMP_WAIT_POLICY=PASSIVE; load average (1 min) "
             f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after.", "",
             *environment_lines(), "",
             "## GELU on channels-last maps, forward + backward (ms, median of 15)", "",
             "The convolutional stages' activations at 224 px, batch 16. PyTorch's CPU GELU gives only contiguous "
             "tensors to oneDNN; ssmamba's `GELU` runs a channels-last map as its dense (B, H, W, C) view.", "",
             markdown_table(["map", "channels", "grid", "dtype", "nn.GELU ms", "ssmamba GELU ms", "speed-up"],
                            [(g["map"], g["channels"], f"{g['side']}x{g['side']}", g["dtype"], f"{g['plain_ms']:.2f}",
                              f"{g['ssmamba_ms']:.2f}", f"{g['plain_ms'] / g['ssmamba_ms']:.2f}x") for g in gelus]), "",
             "## The default model's training step with each measure undone", "",
             f"One process per row, {args.repeats} rounds, each running every variant once in a shuffled order; "
             "images per CPU-second as a multiple of ResNet-18's in the same rounds (>= 1.0x is issue 16's goal). "
             "A measure that acts under bf16 autocast only is not undone in float32 rows (-).", "",
             markdown_table(["px", "precision", "ResNet-18 s/step", *variants],
                            [(c["size"], "bf16 autocast" if c["bf16"] else "fp32", f"{c['seconds']['resnet18']:.3f}",
                              *(f"{c['seconds']['resnet18'] / c['seconds'][v]:.3f}x" if v in c["seconds"] else "-"
                                for v in variants)) for c in cases]), ""]  # fmt: skip
    write_markdown_and_json(RESULTS, args.results_name, lines, {"gelu": gelus, "steps": cases,
                                                                "threads": args.threads, "busy_core": args.busy_core})


if __name__ == "__main__":
    main()
