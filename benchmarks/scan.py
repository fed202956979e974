"""Selective-scan benchmark: forward and forward+backward time and peak memory of every available backend.

    python benchmarks/scan.py            # batch 32, dim 384, N 16, L in (196, 784, 3136); writes results/scan.md
    python benchmarks/scan.py --quick    # small shapes, under a minute

Every (backend, L, pass) case runs in a fresh Python process so that its peak memory is its own (--quick runs them
in this process to stay under a minute; see common.py for how peaks stay honest there). Inputs are those
of a Mamba layer: D, z, delta_bias and softplus all on, B and C shared by all channels (batch, N, L). The forward
is timed under torch.no_grad() (inference); forward+backward with every input requiring grad. Ratios are against
the autograd `ref` loop measured in the same run; its largest case runs once only (tens of seconds, many GB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Waiting OpenMP threads sleep instead of spinning. On a shared machine with more busy processes than cores, a
# spinning thread whose partner was descheduled burns its time slice at every barrier: the ref loop opens ~6
# parallel regions per step and measured 10-50x slower, and erratic, that way. Set before torch loads OpenMP;
# children inherit it; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MIB,
    PeakMemory,
    markdown_table,
    median_seconds,
    read_section,
    replace_section,
    run_isolated,
    write_result,
)

from ssmamba.ops import backend_report, selective_scan  # noqa: E402
from ssmamba.ops.scan_cpu import load_extension  # noqa: E402

FULL = dict(batch=32, dim=384, state=16, lengths=(196, 784, 3136))
QUICK = dict(batch=4, dim=64, state=16, lengths=(196, 784))
PASSES = ("forward", "forward+backward")
REF_SINGLE_RUN_FROM = 3136  # ref cases this long are timed once, without warm-up
RESULTS = Path(__file__).resolve().parent / "results" / "scan.md"
ROOFLINE = "Roofline of the directional kernel"  # the section benchmarks/scan_roofline.py writes


def make_inputs(batch: int, dim: int, length: int, state: int, device: str, requires_grad: bool) -> dict:
    g = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device).requires_grad_(requires_grad)

    return dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length, scale=0.5, shift=-2.0),
        A=(-torch.exp(torch.randn(dim, state, generator=g) * 0.5)).to(device).requires_grad_(requires_grad),
        B=randn(batch, state, length),
        C=randn(batch, state, length),
        D=randn(dim),
        z=randn(batch, dim, length),
        delta_bias=randn(dim, scale=0.1),
    )


def run_case(case: dict) -> dict:
    """Time one (backend, length, pass) case in this process and measure its peak memory."""
    torch.manual_seed(0)
    device = "cuda" if case["backend"] == "cuda" else "cpu"
    if case["backend"] == "cpu":
        load_extension()  # already built by the parent; loading it is not part of the measurement
    backward = case["pass"] == "forward+backward"
    inputs = make_inputs(case["batch"], case["dim"], case["length"], case["state"], device, requires_grad=backward)
    grad_out = torch.randn(case["batch"], case["dim"], case["length"], device=device)

    def forward():
        with torch.no_grad():
            return selective_scan(**inputs, delta_softplus=True, backend=case["backend"])

    def forward_backward():
        for tensor in inputs.values():
            tensor.grad = None
        selective_scan(**inputs, delta_softplus=True, backend=case["backend"]).backward(grad_out)

    with PeakMemory(device) as peak:
        seconds = median_seconds(
            forward_backward if backward else forward,
            repeats=case["repeats"],
            warmup=case["warmup"],
            sync_cuda=device == "cuda",
        )
    return case | dict(seconds=seconds, peak_bytes=peak.extra_bytes, memory_method=peak.method)


def available_backends() -> list[str]:
    names = [name for name, ok, _ in backend_report() if ok]
    if "cpu" in names:
        load_extension()  # compile once here (excluded from timings), so that the cases only load it
    return names


def measure_all(shape: dict, backends: list[str], repeats: int, isolate: bool) -> dict[tuple[str, int, str], dict]:
    results = {}
    for length in shape["lengths"]:
        for backend in backends:
            for pass_name in PASSES:
                single = backend == "ref" and length >= REF_SINGLE_RUN_FROM
                case = dict(backend=backend, length=length, batch=shape["batch"], dim=shape["dim"],
                            state=shape["state"], repeats=1 if single else repeats, warmup=0 if single else 1,
                            **{"pass": pass_name})  # fmt: skip
                print(f"  {backend:<5} L={length:<5} {pass_name:<17}", end=" ", flush=True)
                try:
                    results[(backend, length, pass_name)] = (
                        run_isolated([__file__, "--case", json.dumps(case)]) if isolate else run_case(case)
                    )
                    r = results[(backend, length, pass_name)]
                    print(f"{r['seconds']:.3f} s  {r['peak_bytes'] / MIB:.0f} MiB", flush=True)
                except RuntimeError as error:  # e.g. killed for memory: say so in the table instead of stopping
                    results[(backend, length, pass_name)] = dict(error=str(error).splitlines()[0])
                    print("failed:", str(error).splitlines()[0], flush=True)
    return results


def results_table(results: dict, shape: dict, backends: list[str]) -> str:
    def cell(backend, length, pass_name, key):
        return results.get((backend, length, pass_name), {}).get(key)

    headers = ["backend", "L", "forward s", "fwd+bwd s", "forward peak MiB", "fwd+bwd peak MiB",
               "forward speed-up vs ref", "fwd+bwd speed-up vs ref", "fwd+bwd memory / ref"]  # fmt: skip
    rows = []
    for length in shape["lengths"]:
        for backend in backends:
            t_f, t_fb = (cell(backend, length, p, "seconds") for p in PASSES)
            m_f, m_fb = (cell(backend, length, p, "peak_bytes") for p in PASSES)
            ref_f, ref_fb = (cell("ref", length, p, "seconds") for p in PASSES)
            ref_m = cell("ref", length, PASSES[1], "peak_bytes")
            rows.append([
                backend, length,
                f"{t_f:.3f}" if t_f else "failed", f"{t_fb:.3f}" if t_fb else "failed",
                f"{m_f / MIB:.0f}" if m_f is not None else "-", f"{m_fb / MIB:.0f}" if m_fb is not None else "-",
                f"{ref_f / t_f:.1f}x" if t_f and ref_f else "-", f"{ref_fb / t_fb:.1f}x" if t_fb and ref_fb else "-",
                f"{m_fb / ref_m:.3f}" if m_fb is not None and ref_m else "-",
            ])  # fmt: skip
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes (batch 4, dim 64), under a minute")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median); default 3")
    parser.add_argument("--backends", default=None, help="comma-separated subset of the available backends")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS}; none for --quick)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    shape = QUICK if args.quick else FULL
    backends = available_backends()
    if args.backends:
        backends = [b for b in args.backends.split(",") if b in backends]
    if "ref" not in backends:
        backends.insert(0, "ref")  # every ratio is against it
    load_before = os.getloadavg()
    print(f"selective scan, batch {shape['batch']}, dim {shape['dim']}, N {shape['state']}; backends {backends}")
    results = measure_all(shape, backends, args.repeats, isolate=not args.quick)
    load_after = os.getloadavg()
    table = results_table(results, shape, backends)
    print(table)

    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        method = next((r["memory_method"] for r in results.values() if "memory_method" in r), "")
        notes = [
            f"Shape: batch {shape['batch']}, dim {shape['dim']}, N {shape['state']}; D, z, delta_bias, softplus on; "
            "B, C (batch, N, L). Forward timed under torch.no_grad(); forward+backward with every input requiring "
            f"grad. Median of {args.repeats} runs after one warm-up, except ref at L >= {REF_SINGLE_RUN_FROM}: one "
            "run, no warm-up.",
            f"Peak memory: each case in a fresh Python process; extra resident memory over the inputs ({method}).",
            f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}: with spinning waits (the default) the ref loop's many "
            "small parallel ops ran 10-50x slower on this shared, oversubscribed 2-core machine.",
            f"Machine load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: other jobs shared "
            "the cores, so times are noisy (ratios are within one run).",
        ]
        command = "python benchmarks/scan.py" + (" --quick" if args.quick else "") + (
            f" --repeats {args.repeats}" if args.repeats != 3 else "")  # fmt: skip
        roofline = read_section(out, ROOFLINE)  # written by scan_roofline.py; kept
        write_result(out, "Selective scan benchmark", command, table, notes)
        if roofline is not None:
            replace_section(out, ROOFLINE, roofline)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
