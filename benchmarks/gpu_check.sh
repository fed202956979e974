#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one prepared run from the repository root (7.5 minutes at most: its timeouts):
# environment, the gpu-marked tests, benchmarks/gpu_directional.py (the in-place Triton directional scan against the
# reordering path it replaced), benchmarks/gpu_train.py (and a profile of the default model's training step),
# `wsi extract` tiles/s (benchmarks/wsi_extract.py: 128 tiles, one round, the default model beside ResNet-50 and
# ViT-S/16, so its time includes Triton's first compile), then as much of the whole suite as fits with a GPU
# visible (device "auto" then means CUDA; -v names each result as it comes, so a cut-off run still says which tests
# failed). Logs and results go to $OUT (default runs/gpu_check).
#     bash benchmarks/gpu_check.sh
# The same-budget leaderboards at full scale have their own prepared run: bash benchmarks/gpu_benchmark.sh (~10 min).
# On the device tool's H200 image (torch, Triton, timm present; no openslide/tiffslide, no internet), first fetch the
# WSI readers here as wheels into the ignored .whl/ (pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux_2_28_x86_64 ... openslide-python openslide-bin tiffslide zarr numcodecs imagecodecs donfig
# google-crc32c), carry .whl, and start the command with
#     pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#     pip install -q --no-index --no-deps --no-build-isolation -e .
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, timm, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'triton', triton.__version__)"
  python3 -c "from ssmamba.ops import backend_report; [print(*row) for row in backend_report()]"
} 2>&1 | tee "$OUT/env.txt"
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_scan_cuda.py \
  tests/ops/test_directional_scan.py tests/train/test_finetune.py 2>&1 | tee "$OUT/gpu_tests.log"
timeout 60 python3 benchmarks/gpu_directional.py --out "$OUT" 2>&1 | tee "$OUT/gpu_directional.log"
timeout 150 python3 benchmarks/gpu_train.py --repeats 5 --models resnet50 ssmamba_tiny_fast ssmamba_tiny --sizes 224 64 \
  --profile ssmamba_tiny_fast --out "$OUT" \
  2>&1 | tee "$OUT/gpu_train.log"
timeout 60 python3 benchmarks/wsi_extract.py --device cuda --tiles 128 --repeats 1 --out "$OUT" \
  --encoders ssmamba_tiny_fast resnet50 vit_small_patch16_224 \
  2>&1 | tee "$OUT/wsi_extract.log"
timeout 40 python3 -m pytest -v -n 8 -m "not gpu" -p no:cacheprovider tests 2>&1 | grep -E "FAILED|ERROR|passed|failed" \
  | tee "$OUT/suite.log"
