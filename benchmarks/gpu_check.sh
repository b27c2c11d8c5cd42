#!/usr/bin/env bash
# One short, prepared GPU check: installs nothing, reaches no network, < 5 minutes.
# Runs the correctness checks and the hot-swap table on CUDA in bf16, adapterhub beside
# peft, and writes benchmarks/results/gpu_check-cuda.json. Run from the repository root
# on a machine where `make setup` has built .venv (or carry .venv along).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv || true
timeout 280 "$PY" benchmarks/gpu_check.py --device cuda --dtype bfloat16 "$@"
