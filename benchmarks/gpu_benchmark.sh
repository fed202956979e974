#!/usr/bin/env bash
# The leaderboards of benchmarks/leaderboards.py at full scale on one GPU: all labelled training samples, longer
# schedules, 5 seeds, same 7 entries, same leaderboard files (benchmarks/results/leaderboard_<dataset>_gpu.*).
# Several `ssmamba benchmark` processes share the GPU and split the cells through the cells' lock files (the
# state-space entries are bound by the scan kernel's latency, so one process leaves the GPU mostly idle).
#     bash benchmarks/gpu_benchmark.sh                                   # pcam1000, idc, crchp from ../shared/data
#     DATASETS="pcam1000" SEEDS=0,1,2 bash benchmarks/gpu_benchmark.sh   # a part of it
#     DATASETS="mine=path/to/manifest.csv" DEVICE=cpu JOBS=2 EXTRA="--epochs 1" bash benchmarks/gpu_benchmark.sh
# Sized for about 10 minutes on one H200 with the Triton scan (benchmarks/results/gpu_train.md: ssmamba_tiny trains
# at ~880 img/s at 64 px there; the timm baselines are 10x faster): pcam1000 30 epochs, idc 12, crchp 8 epochs of
# every labelled nucleus. Cells are resumable, so a run cut off by the device's time limit continues on the next.
# Knobs: DATASETS (names or name=path), ENTRIES, SEEDS, JOBS, DEVICE, OUT, RESULTS, DATA_ROOT, EXTRA (more options,
# appended last so they win).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
DATASETS=${DATASETS:-pcam1000 idc crchp}
ENTRIES=${ENTRIES:-ssmamba,ssmamba-mamim,ssmamba-dms,ssmamba-lpr,resnet18,convnext_atto,mambaout_femto}
SEEDS=${SEEDS:-0,1,2,3,4}
JOBS=${JOBS:-4}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_leaderboards}
RESULTS=${RESULTS:-benchmarks/results}
EXTRA=${EXTRA:-}
# the checkout's own code, installed or not (the GPU image has torch, timm and triton; see gpu_check.sh for the rest)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$RESULTS"
for spec in $DATASETS; do
  name=${spec%%=*}
  case $spec in
    *=*) args=(--data "${spec#*=}") ;;
    pcam1000) args=(--data "$DATA_ROOT/pcam1000/labels.csv" --epochs 30 --pretrain-epochs 30) ;;
    idc) args=(--data "$DATA_ROOT/idc/labels.csv" --epochs 12 --pretrain-epochs 4 --balance loss) ;;
    crchp) args=(--data "$DATA_ROOT/crchp/nuclei.csv" --crop-size 64 --epochs 8 --pretrain-epochs 2
                 --monitor weighted_f1) ;;
    *) echo "unknown data set $spec (use NAME=PATH for your own)" >&2; exit 2 ;;
  esac
  mkdir -p "$OUT/$name"
  pids=()
  for job in $(seq "$JOBS"); do
    # shellcheck disable=SC2086  # EXTRA is a list of options
    python3 -m ssmamba benchmark "${args[@]}" --entries "$ENTRIES" --seeds "$SEEDS" --img-size 64 --batch-size 128 \
      --precision bf16 --device "$DEVICE" --threads 2 --num-workers 2 --no-progress --out "$OUT/$name" $EXTRA \
      >>"$OUT/$name/job$job.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  [ "$status" -eq 0 ] || { echo "$name: a benchmark process failed; see $OUT/$name/job*.log" >&2; exit "$status"; }
  for suffix in md json png; do cp "$OUT/$name/leaderboard.$suffix" "$RESULTS/leaderboard_${name}_gpu.$suffix"; done
  echo "$name: $RESULTS/leaderboard_${name}_gpu.md"
done
