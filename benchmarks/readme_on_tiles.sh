#!/usr/bin/env bash
# The README's "Using it on your data" commands, run as written (defaults, no zoom flags) on a folder of real 224-px
# tiles (benchmarks/tiles224.py: crchp, epithelial vs stroma, split by image), with `my_data/manifest.csv` replaced
# by that folder. Only --no-progress (quiet logs) and --overwrite (rerunnable) are added. Outputs go to $OUT (default
# runs/readme_tiles224); then `python benchmarks/readme_on_tiles.py` writes benchmarks/results/readme_tiles224.md.
# About 30 CPU-minutes on 2 cores.
#     bash benchmarks/readme_on_tiles.sh
set -euo pipefail
OUT=${OUT:-runs/readme_tiles224}
mkdir -p "$OUT"
python benchmarks/tiles224.py --out "$OUT/tiles224" > "$OUT/tiles.txt"
cd "$OUT"
: > commands.txt
ssmamba() { echo "ssmamba $*" >> commands.txt; python -m ssmamba "$@" --no-progress --overwrite; }
ssmamba pretrain --data tiles224 --split train --img-size 96 --epochs 30 --out runs/pre
ssmamba finetune --data tiles224 --init runs/pre/checkpoint --img-size 96 --out runs/ft
ssmamba evaluate --checkpoint runs/ft/best --data tiles224 --split test --out runs/eval
ssmamba predict --checkpoint runs/ft/best tiles224/test --out predictions.csv
ssmamba probe --encoder runs/pre/checkpoint --data tiles224 --img-size 96 --out runs/probe
ssmamba finetune --data tiles224 --model convnext_atto --img-size 96 --out runs/convnext
ssmamba evaluate --checkpoint runs/convnext/best --data tiles224 --split test --out runs/eval_convnext
echo done > DONE
