#!/usr/bin/env bash
# Prepared GPU check (issue 15): kernel build + parity + bench, torch CUDA tracker fp32/fp16 parity and FPS
# for tiny, s3-r50, s3-base at 480p, one table (benchmarks/gpu_check.py). Budget: < 8 min on one GPU.
# Usage: benchmarks/gpu_check.sh [OUT.md]   (PYTHON=... to choose the interpreter; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-gpu_check.md}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device on this machine; nothing measured" >&2
  exit 2
fi
command -v nvcc >/dev/null || echo "gpu_check: nvcc not on PATH; the fused kernel build will fail" >&2
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
exec timeout 470 "$PY" -m s3rt.benchmarks.gpu_check --out "$OUT"
