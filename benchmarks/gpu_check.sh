#!/usr/bin/env bash
# Prepared GPU check (benchmarks/gpu_check.py): kernel build, parity and speed, device memory, torch CUDA
# trackers fp32/fp16 vs CPU fp32 and FPS at 480p; one table written row by row. Budget: < 6 min on one GPU.
# Runs from a plain checkout: no venv, no pip install, no network. The interpreter is $PYTHON if set,
# else the first of .venv/bin/python, python3, python that can import torch.
# Usage: benchmarks/gpu_check.sh [OUT.md] [gpu_check.py options]
# Exit: 0 all steps passed, 1 a step failed (its row says why), 2 no CUDA device, 3 torch cannot be imported.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check.md}"
shift || true
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
  PY="${PY:-python3}"          # none imports torch: gpu_check.py says so in its table (exit 3)
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 8)}"
# the hard stop is a little above gpu_check.py's own --budget (no step starts after 330 s)
exec timeout --kill-after=10 360 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
