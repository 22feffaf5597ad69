#!/usr/bin/env bash
# Issue 22 on a GPU machine: the server's frame rate for 1 and 4 sessions, end to end from clients on the same
# machine (keypoints on the CPU with LiteRT, frames decoded), then the server alone (keypoints precomputed), then
# `run --remote` against a local run on loopback. About 5 minutes with the conversion (skipped when MODEL exists).
#
#   benchmarks/remote_gpu.sh [MODEL_DIR]        (default: vox-256, random weights, in /tmp/lp-remote-gpu/vox)
#   ENGINE=savedmodel|openvino|tflite|auto      (default: savedmodel where TensorFlow sees a GPU, else auto)
#   SECONDS_EACH=20  PYTHON=.venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODEL=${1:-/tmp/lp-remote-gpu/vox}
SECONDS_EACH=${SECONDS_EACH:-20}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if [ ! -f "$MODEL/manifest.json" ]; then
  echo "converting a vox-256 model with random weights into $MODEL (once)"
  $PY -c "import sys; from pathlib import Path; from livepuppet.quiet import import_tensorflow; import_tensorflow(); \
from livepuppet.commands.bench import build_random_model; build_random_model(Path(sys.argv[1]))" "$MODEL"
fi
if [ -z "${ENGINE:-}" ]; then
  GPUS=$($PY -c "from livepuppet.quiet import import_tensorflow; print(len(import_tensorflow().config.list_physical_devices('GPU')))")
  # auto chooses among the CPU engines (LiteRT, OpenVINO); TensorFlow's SavedModel engine is the one on a CUDA GPU
  if [ "$GPUS" -gt 0 ]; then ENGINE=savedmodel; else ENGINE=auto; fi
fi
echo "server engine: $ENGINE"
$PY benchmarks/remote_sessions.py --model "$MODEL" --engine "$ENGINE" --sessions 1 4 --seconds "$SECONDS_EACH" --client full
$PY benchmarks/remote_sessions.py --model "$MODEL" --engine "$ENGINE" --sessions 1 4 --seconds "$SECONDS_EACH" --client keys
$PY benchmarks/remote_loopback.py --model "$MODEL" --engine "$ENGINE" --repeats 2
