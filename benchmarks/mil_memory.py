"""Peak memory and time of MIL inference on one large bag: plain forward pass vs chunked ``predict_bag``.

Each case runs in a fresh subprocess and reports the growth of its peak resident memory (``ru_maxrss``) over the
memory held after building the inputs, so cases do not pollute each other. Prints a table and writes
``benchmarks/results/mil_memory.md``.

    python benchmarks/mil_memory.py                 # 100k tiles of 1024-d features (UNI-sized), CPU
    python benchmarks/mil_memory.py --tiles 20000 --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASE = r"""
import json, resource, sys, time
import torch
from ssmamba.mil import create_mil_head
head_name, tiles, dim, mode, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.manual_seed(0)
head = create_mil_head(head_name, in_dim=dim, num_classes=2).eval()
side = int(tiles ** 0.5) + 1
cells = torch.arange(tiles)
coords = torch.stack([cells % side, cells // side], 1) * 448
features = torch.randn(tiles, dim)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.inference_mode():
    if mode == "chunked":
        out = head.predict_bag(features, coords, chunk_size=chunk)
    else:
        out = head.forward_with_attention(features[None], coords[None])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "extra_mb": (peak - base) / 1024, "inputs_mb": features.numel() * 4 / 2**20}))
"""


def measure(head: str, tiles: int, dim: int, mode: str, chunk: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CASE, head, str(tiles), str(dim), mode, str(chunk)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--heads", nargs="+", default=["abmil", "mamba_mil"])
    parser.add_argument("--quick", action="store_true", help="a fifth of the tiles")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "mil_memory.md")
    args = parser.parse_args()
    tiles = args.tiles // 5 if args.quick else args.tiles

    import torch

    rows = []
    for head in args.heads:
        for mode in ("full", "chunked"):
            result = measure(head, tiles, args.dim, mode, args.chunk)
            rows.append((head, mode, result))
            print(head, mode, result, flush=True)
    lines = [f"# MIL inference on one bag of {tiles:,} tiles x {args.dim} features (CPU)", "",
             f"Command: `python benchmarks/mil_memory.py --tiles {args.tiles} --dim {args.dim} --chunk {args.chunk}"
             f"{' --quick' if args.quick else ''}`; torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{datetime.date.today()}. Memory: growth of peak RSS (ru_maxrss) of a fresh process over what it held "
             f"after building the inputs ({tiles * args.dim * 4 / 2**20:.0f} MB of features).", "",
             "| head | inference | time (s) | extra peak memory (MB) |", "|---|---|---|---|"]
    for head, mode, result in rows:
        if "error" in result:
            lines.append(f"| {head} | {mode} | failed: {result['error']} | |")
        else:
            label = f"chunked ({args.chunk} tiles)" if mode == "chunked" else "full forward"
            lines.append(f"| {head} | {label} | {result['seconds']:.2f} | {result['extra_mb']:.0f} |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
