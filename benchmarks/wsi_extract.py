"""Tiles per second of ``ssmamba wsi extract`` at 224 px: the default model and ssmamba_tiny beside ResNet-50 and
ViT-S/16.

The real command line end to end, on a synthetic pyramidal slide written here (no download): a JPEG-compressed
tiled TIFF at 0.25 µm/px with levels 1, 4, 16 (the layout of a 40x Aperio scan) holding exactly ``--tiles`` tiles
of tissue at 0.5 µm/px, 224 px. ``ssmamba wsi tile`` runs once; then every encoder runs
``ssmamba wsi extract --overwrite`` in a fresh process, the encoders interleaved (order rotated each round) over
``--repeats`` rounds, same ``--threads``, batch size and ``OMP_WAIT_POLICY=PASSIVE`` for all. Encoders are
built with random weights (throughput does not depend on them; nothing is downloaded).

Per run: the command's wall clock (tiles / wall = tiles/s as a user meets it, process start included), then the
same command again without ``--overwrite``, which finds the slide done and stops after importing, building and
hashing the encoder: that is the fixed start-up cost, and tiles / (wall - start-up) is the steady embedding
rate. A separate fresh process times only the reading (the same DataLoader over the slide with no model), so
reading and model time can be told apart. Medians over rounds; ratios against resnet50 are what to read.
Writes ``wsi_extract.md`` and ``.json`` into ``--out``.

    python benchmarks/wsi_extract.py                              # 256 tiles, 2 rounds, 2 threads, CPU
    python benchmarks/wsi_extract.py --tiles 16 --repeats 1       # smoke run
    python benchmarks/wsi_extract.py --device cuda --out runs/x   # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
RESULTS = HERE / "results"
ENCODERS = {"ssmamba_tiny_fast": "ssmamba_tiny_fast (default)", "ssmamba_tiny": "ssmamba_tiny", "resnet50": "ResNet-50",
            "vit_small_patch16_224": "ViT-S/16"}
BASELINE = "resnet50"
SLIDE_NAME = "synthetic_slide"


def write_synthetic_slide(path: str | Path, tiles: int, patch_size: int = 224, target_mpp: float = 0.5,
                          slide_mpp: float = 0.25, downsamples: tuple[int, ...] = (1, 4, 16),
                          jpeg_quality: int = 90, seed: int = 0) -> Path:
    """A JPEG-compressed tiled pyramidal TIFF whose tissue covers exactly ``tiles`` tiles of ``patch_size`` px at
    ``target_mpp`` (so ``wsi tile --mpp target_mpp --patch-size patch_size`` keeps that many).

    The tissue (H&E pink with noise texture, period 509 px so no two tiles are alike) fills whole cells of the
    tile grid, row by row over ceil(sqrt(tiles)) columns, inside one tile of white glass all round; glass tiles
    hold no tissue at all, so the tissue mask keeps exactly the painted ones. Lower levels are subsampled.
    """
    step = patch_size * target_mpp / slide_mpp  # level-0 pixels per tile
    if abs(step - round(step)) > 1e-6:
        raise ValueError(f"patch_size * target_mpp / slide_mpp must be whole level-0 pixels, got {step}")
    if tiles < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    import tifffile

    step = int(round(step))
    cols = math.ceil(math.sqrt(tiles))
    rows = math.ceil(tiles / cols)
    width, height = (cols + 2) * step, (rows + 2) * step
    image = np.full((height, width, 3), 245, np.uint8)
    period = 509
    rng = np.random.default_rng(seed)
    texture = (np.array([200, 110, 170], np.float32) + rng.normal(0, 12, (period, period, 3)).astype(np.float32))
    texture = texture.clip(0, 255).astype(np.uint8)
    reps = (math.ceil(rows * step / period), math.ceil(cols * step / period), 1)
    tissue = np.tile(texture, reps)
    for index in range(tiles):
        row, col = divmod(index, cols)
        y0, x0 = row * step, col * step
        image[step + y0:step + y0 + step, step + x0:step + x0 + step] = tissue[y0:y0 + step, x0:x0 + step]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tiff:
        for index, factor in enumerate(downsamples):
            tiff.write(np.ascontiguousarray(image[::factor, ::factor]), tile=(256, 256), photometric="rgb",
                       compression="jpeg", compressionargs={"level": jpeg_quality}, maxworkers=1,
                       resolution=(1e4 / (slide_mpp * factor), 1e4 / (slide_mpp * factor)),
                       resolutionunit="CENTIMETER", subfiletype=0 if index == 0 else 1)
    return path


def _env(threads: int) -> dict:
    env = os.environ.copy()
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
               PYTHONWARNINGS="ignore")
    return env


def _run(argv: list[str], threads: int) -> tuple[float, str]:
    """Run ``python -m ssmamba ARGV`` in a fresh process; (wall seconds, stdout + stderr). Raises on failure."""
    command = [sys.executable, "-m", "ssmamba", *argv]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-4000:]}")
    return wall, done.stdout + done.stderr


def read_case(patches: str, batch_size: int, num_workers: int) -> dict:
    """Runs in a fresh process: the extract step's DataLoader over the slide (read, resize, normalise, collate)
    with no model, timed from the first tile to the last."""
    import torch
    from torch.utils.data import DataLoader

    from ssmamba.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from ssmamba.wsi.extract import TileDataset
    from ssmamba.wsi.tiling import TileGrid

    grid = TileGrid.load_h5(patches)
    dataset = TileDataset(grid.slide_path, grid, IMAGENET_MEAN, IMAGENET_STD, slide_mpp=grid.level0_mpp)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    start = time.perf_counter()
    count = sum(len(tiles) for tiles, _ in loader)
    seconds = time.perf_counter() - start
    dataset.close()
    return {"tiles": count, "seconds": seconds, "tiles_per_s": count / seconds, "threads": torch.get_num_threads()}


def _read_pass(patches: Path, args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import wsi_extract; "
            f"print(json.dumps(wsi_extract.read_case({str(patches)!r}, {args.batch_size}, {args.num_workers})))")
    env = _env(args.threads)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"read pass failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _parse_log(log: str) -> dict:
    """What `wsi extract` says of itself: features, device, tiles and the side they were embedded at."""
    parsed = {}
    head = re.search(r"encoder (\S+) \((\w+) weights, (\d+) features, .*\) on (\S+); ", log)
    if head:
        parsed.update(encoder_name=head.group(1), weights=head.group(2), features=int(head.group(3)),
                      device=head.group(4))
    done = re.search(r": (\d+) tiles of (\d+) px embedded at (\d+) px", log)
    if done:
        parsed.update(tiles=int(done.group(1)), tile_px=int(done.group(2)), input_px=int(done.group(3)))
    parsed["skipped"] = "(already done)" in log
    return parsed


def run_benchmark(args) -> dict:
    import torch

    encoders = list(dict.fromkeys(args.encoders))
    load_before = os.getloadavg()
    work_parent = tempfile.TemporaryDirectory(prefix="wsi_extract_bench_") if args.work is None else None
    work = Path(args.work or work_parent.name)
    slide = write_synthetic_slide(work / f"{SLIDE_NAME}.tif", args.tiles, slide_mpp=args.slide_mpp)
    out = work / "out"
    tile_wall, tile_log = _run(["wsi", "tile", str(slide), "--out", str(out), "--mpp", "0.5", "--patch-size", "224"],
                               args.threads)
    patches = out / "patches_0.50mpp_224px" / f"{SLIDE_NAME}.h5"
    kept = re.search(r": (\d+) tiles", tile_log)
    if not patches.is_file() or not kept or int(kept.group(1)) != args.tiles:
        raise RuntimeError(f"wsi tile kept {kept.group(1) if kept else '?'} tiles, expected {args.tiles}:\n{tile_log}")
    print(f"slide {slide.stat().st_size / 2**20:.1f} MiB, {args.tiles} tiles; wsi tile {tile_wall:.1f} s", flush=True)

    common = ["--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers), "--device", args.device,
              "--threads", str(args.threads), "--no-progress"]
    runs, reads = [], []
    for round_index in range(args.repeats):
        shift = round_index % len(encoders)
        order = encoders[shift:] + encoders[:shift]  # rotate, so no encoder always runs first
        for name in order:
            argv = ["wsi", "extract", str(out), "--encoder", name, *common]
            load = os.getloadavg()[0]
            wall, log = _run([*argv, "--overwrite"], args.threads)
            startup, startup_log = _run(argv, args.threads)
            info = _parse_log(log)
            if info.get("tiles") != args.tiles or info.get("skipped") or not _parse_log(startup_log)["skipped"]:
                raise RuntimeError(f"unexpected wsi extract output for {name}:\n{log}\n---\n{startup_log}")
            run = {"round": round_index, "encoder": name, "wall_s": wall, "startup_s": startup,
                   "tiles_per_s": args.tiles / wall, "steady_tiles_per_s": args.tiles / max(wall - startup, 1e-9),
                   "load1_before": load, **info}
            runs.append(run)
            print(f"round {round_index + 1} {name:>22}: {wall:6.1f} s wall, {startup:5.1f} s start-up -> "
                  f"{run['tiles_per_s']:6.2f} tiles/s ({run['steady_tiles_per_s']:6.2f} without start-up)", flush=True)
        reads.append(_read_pass(patches, args))
        print(f"round {round_index + 1} {'read only':>22}: {reads[-1]['tiles_per_s']:6.1f} tiles/s", flush=True)
    load_after = os.getloadavg()
    if work_parent is not None:
        work_parent.cleanup()
    summary = {}
    for name in encoders:
        mine = [r for r in runs if r["encoder"] == name]
        summary[name] = {key: statistics.median(r[key] for r in mine)
                         for key in ("wall_s", "startup_s", "tiles_per_s", "steady_tiles_per_s")}
        summary[name].update(features=mine[0].get("features"), input_px=mine[0].get("input_px"),
                             device=mine[0].get("device"))
    read = statistics.median(r["tiles_per_s"] for r in reads)
    for name, row in summary.items():
        embed_s = row["wall_s"] - row["startup_s"]
        row["model_share"] = max(0.0, 1 - (args.tiles / read) / embed_s) if embed_s > 0 else float("nan")
        if BASELINE in summary:
            row["vs_baseline"] = row["tiles_per_s"] / summary[BASELINE]["tiles_per_s"]
            row["steady_vs_baseline"] = row["steady_tiles_per_s"] / summary[BASELINE]["steady_tiles_per_s"]
    return {"tiles": args.tiles, "repeats": args.repeats, "threads": args.threads, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "device_requested": args.device, "slide_mpp": args.slide_mpp,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_before": load_before, "load_after": load_after, "tile_wall_s": tile_wall,
            "read_tiles_per_s": read, "reads": reads, "summary": summary, "runs": runs}


def report(result: dict, command: str, out_dir: Path) -> str:
    sys.path.insert(0, str(HERE))
    from common import markdown_table, write_result

    base = BASELINE in result["summary"]
    headers = ["encoder", "D", "input px", "device", "wall s", "start-up s", "tiles/s", "vs ResNet-50",
               "tiles/s w/o start-up", "vs ResNet-50", "model share"]
    rows = []
    for name, row in result["summary"].items():
        rows.append([ENCODERS.get(name, name), row["features"], row["input_px"], row["device"], f"{row['wall_s']:.1f}",
                     f"{row['startup_s']:.1f}", f"**{row['tiles_per_s']:.2f}**",
                     f"{row['vs_baseline']:.2f}x" if base else "-", f"{row['steady_tiles_per_s']:.2f}",
                     f"{row['steady_vs_baseline']:.2f}x" if base else "-", f"{100 * row['model_share']:.0f}%"])
    table = markdown_table(headers, rows)
    table += (f"\n\nRead only (the same DataLoader with no model: JPEG decode, 448 -> 224 px Lanczos, normalise, "
              f"collate): **{result['read_tiles_per_s']:.1f} tiles/s**.")
    before, after = result["load_before"], result["load_after"]
    notes = [
        f"Synthetic slide: JPEG (q90) tiled TIFF, level 0 at {result['slide_mpp']} µm/px, levels 1/4/16, "
        f"{result['tiles']} tissue tiles of 224 px at 0.5 µm/px (read from level 0 as 448 px and shrunk, as for a "
        f"40x scan); `wsi tile` took {result['tile_wall_s']:.1f} s.",
        f"`ssmamba wsi extract OUT --encoder NAME --batch-size {result['batch_size']} --num-workers "
        f"{result['num_workers']} --device {result['device_requested']} --threads {result['threads']} --no-progress "
        f"--overwrite`, random weights, fresh process each, OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS="
        f"{result['threads']}; {result['repeats']} round(s), encoder order rotated each round; medians shown.",
        "wall s: the whole command (interpreter start, imports, building and hashing the encoder, reading, "
        "embedding, writing the .h5); tiles/s = tiles / wall s. start-up s: the same command again without "
        "--overwrite, which finds the features file and stops before reading a tile; tiles/s w/o start-up = "
        "tiles / (wall s - start-up s), the rate a long slide approaches.",
        "model share: 1 - (read-only time / embedding time), the part of the embedding time not spent reading "
        "(model forward + h5 writing); `wsi extract` reads tiles in the main process (--num-workers 0), so reading "
        "and the model take turns.",
        "`wsi extract` prints no timing of its own; D, input px and device are from its log line.",
        f"Load average (1, 5, 15 min) on {os.cpu_count()} logical cores before: {before[0]:.2f} {before[1]:.2f} "
        f"{before[2]:.2f}; after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}. Per-run wall times and each "
        "run's load are in wsi_extract.json.",
        *([result["note"]] if result.get("note") else []),
    ]
    out_dir = Path(out_dir)
    md = out_dir / "wsi_extract.md"
    write_result(md, f"`wsi extract` throughput at 224 px ({result['device_requested']})", command, table, notes)
    (out_dir / "wsi_extract.json").write_text(json.dumps({"command": command, **result}, indent=1))
    return md.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=256, help="tissue tiles on the synthetic slide")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the encoders")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every run")
    parser.add_argument("--batch-size", type=int, default=64, help="wsi extract --batch-size (its default: 64)")
    parser.add_argument("--num-workers", type=int, default=0, help="wsi extract --num-workers (its default: 0)")
    parser.add_argument("--device", default="cpu", help="wsi extract --device: cpu, cuda, ...")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), help="ssmamba or timm model names")
    parser.add_argument("--slide-mpp", type=float, default=0.25, help="µm/px of the synthetic slide's level 0")
    parser.add_argument("--work", default=None, help="folder for the slide and outputs [default: a temporary one]")
    parser.add_argument("--out", default=str(RESULTS), help="where wsi_extract.md and .json go")
    parser.add_argument("--note", default="", help="a line for the results' notes (e.g. what else ran)")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but torch sees no CUDA GPU")
    import torch

    torch.set_num_threads(args.threads)  # so the results header states the threads every run used
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--note" and sys.argv[i] != "--note"]
    command = shlex.join(["python", "benchmarks/wsi_extract.py", *argv]) + (' --note "..."' if args.note else "")
    result = {**run_benchmark(args), "note": args.note}
    print(report(result, command, Path(args.out)))


if __name__ == "__main__":
    main()
