"""A folder of real 224-px H&E tiles, for running the README's "Using it on your data" commands as a new user would.

Cut from ../shared/data/crchp (100 colorectal images, 500x500 px at 20x, 22,444 labelled nuclei): a 3x3 grid of
overlapping 224-px tiles per image (offsets 0, 138, 276). A tile is ``epithelial`` when at least 60% of the
labelled nuclei centred in it are epithelial, ``stroma`` when at most 20% are, and left out in between or when it
holds fewer than 10 labelled nuclei. Tiles keep their image's split (by image, so no tile shares pixels with a tile of
another split). Written as ``OUT/<split>/<class>/<image>_<row>_<col>.png`` (the layout `ssmamba` reads as a folder
with splits); nothing is committed, the folder is rebuilt in seconds.

    python benchmarks/tiles224.py --out runs/tiles224
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crchp"
TILE, OFFSETS, MIN_NUCLEI = 224, (0, 138, 276), 10


def build(out: Path, data: Path = DATA) -> Counter:
    nuclei: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    splits: dict[str, str] = {}
    with open(data / "nuclei.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            nuclei[row["image"]].append((float(row["x"]), float(row["y"]), row["label"]))
            splits[row["image"]] = row["split"]
    counts: Counter = Counter()
    for image, points in sorted(nuclei.items()):
        pixels = Image.open(data / image).convert("RGB")
        for top in OFFSETS:
            for left in OFFSETS:
                inside = [label for x, y, label in points if left <= x < left + TILE and top <= y < top + TILE]
                if len(inside) < MIN_NUCLEI:
                    continue
                share = inside.count("epithelial") / len(inside)
                label = "epithelial" if share >= 0.6 else "stroma" if share <= 0.2 else None
                if label is None:
                    continue
                folder = out / splits[image] / label
                folder.mkdir(parents=True, exist_ok=True)
                tile = pixels.crop((left, top, left + TILE, top + TILE))
                tile.save(folder / f"{Path(image).stem}_{top}_{left}.png")
                counts[(splits[image], label)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/tiles224"))
    args = parser.parse_args()
    if not (DATA / "nuclei.csv").is_file():
        raise SystemExit(f"Error: {DATA / 'nuclei.csv'} not found: this script needs ../shared/data beside the checkout")
    counts = build(args.out)
    for (split, label), n in sorted(counts.items()):
        print(f"{split:5s} {label:10s} {n}")


if __name__ == "__main__":
    main()
