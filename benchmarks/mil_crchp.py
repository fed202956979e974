"""MIL heads compared on the crchp colon-cancer bags (Ilse et al. 2018): 5-fold CV, slide-level AUROC.

Each image (500 x 500 px, 20x) is a bag whose instances are a grid of small patches; the bag is positive when
the image holds an epithelial nucleus. Runs the public commands, in order, and writes a Markdown table with the
exact commands to ``benchmarks/results/mil_crchp.md``:

    ssmamba wsi tile IMAGES --out OUT --slide-mpp 0.5 --mpp 0.5 --patch-size P --no-tissue-mask
    ssmamba wsi extract OUT --encoder E [--checkpoint C] --input-size S
    ssmamba mil train --csv bags.csv --id-column image --features OUT/features_.../E --head H --folds 5 ...

Usage (the data live beside the checkout, in ../shared/data/crchp):

    python benchmarks/mil_crchp.py --encoder runs/pretrain/checkpoint            # a MAMIM checkpoint folder
    python benchmarks/mil_crchp.py --encoder ssmamba_test --quick                 # random weights, 2 folds: plumbing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRCHP = REPO.parent / "shared" / "data" / "crchp"
HEADS = ("abmil", "transmil", "mamba_mil")


def run(command: list[str], log: list[str], env_threads: int | None = None) -> float:
    """Run a CLI command, echo it, record it for the results file, return its wall time in seconds."""
    shown = [os.path.relpath(part, REPO) if isinstance(part, Path) else str(part) for part in command]
    printable = ("OMP_NUM_THREADS=%d " % env_threads if env_threads else "") + "ssmamba " + " ".join(
        shlex.quote(part) for part in shown)
    print(f"$ {printable}", flush=True)
    log.append(printable)
    env = dict(os.environ)
    if env_threads:
        env["OMP_NUM_THREADS"] = str(env_threads)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ssmamba", *map(str, command)], check=True, env=env, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="ssmamba/timm name or checkpoint folder")
    parser.add_argument("--checkpoint", help="weights for a named encoder")
    parser.add_argument("--patch-size", type=int, default=64, help="instance patch side, px at 0.5 µm/px")
    parser.add_argument("--stride", type=int, default=32, help="step between patches, px (overlap when < patch)")
    parser.add_argument("--input-size", type=int, default=64, help="side the encoder sees")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mil-threads", type=int, default=1,
                        help="torch threads for MIL training (bags are small: 1 is fastest)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "mil_crchp")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "mil_crchp.md")
    parser.add_argument("--quick", action="store_true", help="2 folds, 3 epochs: checks the plumbing only")
    args = parser.parse_args()
    if not (CRCHP / "bags.csv").is_file():
        sys.exit(f"crchp not found at {CRCHP.resolve()}")
    folds, epochs = (2, 3) if args.quick else (args.folds, args.epochs)
    args.out = args.out.resolve()  # commands run from the repository root
    encoder = Path(args.encoder).resolve() if Path(args.encoder).exists() else args.encoder
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else None

    commands: list[str] = []
    tiles = args.out / f"tiles_{args.patch_size}px_stride{args.stride}"
    run(["wsi", "tile", CRCHP / "images", "--out", tiles, "--slide-mpp", "0.5", "--mpp", "0.5", "--patch-size",
         args.patch_size, "--stride", args.stride, "--no-tissue-mask", "--thumbnail-size", "500"], commands)
    extract = ["wsi", "extract", tiles, "--encoder", encoder, "--img-size", args.input_size,
               "--batch-size", "100", "--device", "cpu"]
    if checkpoint:
        extract += ["--weights", checkpoint]
    run(extract, commands)
    from ssmamba.models.encoders import load_encoder
    from ssmamba.io.features import FeatureKey, features_folder

    embedder = load_encoder(encoder, checkpoint=checkpoint, input_size=args.input_size)
    newest = features_folder(tiles, FeatureKey.for_encoder(embedder, 0.5, args.patch_size))

    rows = []
    for head in args.heads:
        run_dir = args.out / f"{newest.name}_{head}"
        seconds = run(["mil", "train", "--csv", CRCHP / "bags.csv", "--id-column", "image", "--features", newest,
                       "--head", head, "--folds", folds, "--epochs", epochs, "--lr", args.lr, "--seed", args.seed,
                       "--bootstrap", "200", "--device", "cpu", "--out", run_dir], commands, args.mil_threads)
        summary = json.loads((run_dir / "cv_summary.json").read_text())
        stats = summary["summary"]
        rows.append((head, stats["auroc"]["mean"], stats["auroc"]["std"], stats["accuracy"]["mean"],
                     stats["accuracy"]["std"], summary["pooled_out_of_fold"]["auroc"], seconds))

    lines = [
        f"# MIL heads on crchp colon bags ({folds}-fold CV{', QUICK' if args.quick else ''})", "",
        f"Encoder `{newest.name}`; instances: {args.patch_size} px patches every {args.stride} px (0.5 µm/px), "
        f"embedded at "
        f"{args.input_size} px; {epochs} epochs, lr {args.lr}, seed {args.seed}. "
        f"Date {datetime.date.today()}, CPU only.", "",
        "| head | AUROC mean ± std | accuracy mean ± std | pooled out-of-fold AUROC | train+eval time (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {h} | {a:.3f} ± {sa:.3f} | {c:.3f} ± {sc:.3f} | {p:.3f} | {t:.0f} |"
              for h, a, sa, c, sc, p, t in rows]
    lines += ["", "Published anchor (Ilse et al. 2018, 5-fold CV, end-to-end CNN on 27 x 27 patches): attention "
              "MIL AUC 0.968, gated attention 0.968.", "", "Commands:", "", "```"] + commands + ["```", ""]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
