#!/usr/bin/env bash
# The whole GPU session in one prepared script, for a bare GPU machine that has PyTorch
# but not this project (the lent H100/H200 image): installs the wheels carried in .whl/
# (this project's own wheel plus the exact transformers/peft/pydantic versions used here;
# `--no-index`, nothing is fetched), then
#   1. benchmarks/gpu_check.py: correctness + the hot-swap table on CUDA in bf16, with peft
#      measured in the same run;
#   2. the trainer on CUDA (bf16 autocast): LoRA and prefix tuning on a small JSONL set,
#      the same LoRA run under `torchrun --nproc_per_node=1` (NCCL), then `adapterhub
#      generate` with the adapter on CUDA;
#   3. benchmarks/serve_engine.py on CUDA (continuous batching across adapters beside
#      static batches), on SmolLM2's shape with random weights.
# Everything it writes lands in $OUT (default: ./device-out). Under 5 minutes on one H100.
#
# Prepare .whl here (see benchmarks/README-gpu in BENCHMARKS.md):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... transformers peft tokenizers pydantic ...
#   .venv/bin/pip wheel --no-deps --no-build-isolation . -w .whl
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ADAPTERHUB_HOME=/tmp/ah-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt" || true
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"

status=0
echo "== 1. gpu_check (hot-swap correctness + timings, adapterhub beside peft)"
if [ "$DEVICE" = cuda ]; then
  timeout 300 "$PY" benchmarks/gpu_check.py --device cuda --dtype bfloat16 --out "$OUT/gpu_check-cuda.json" > "$OUT/gpu_check.log" 2>&1 || status=1
else  # CPU smoke of this script itself
  timeout 300 "$PY" benchmarks/gpu_check.py --device cpu --dtype float32 --layers 1 --repeats 1 --small --big-seq 16 --out "$OUT/gpu_check-cpu.json" > "$OUT/gpu_check.log" 2>&1 || status=1
fi
tail -45 "$OUT/gpu_check.log"

echo "== 2. trainer on $DEVICE"
# Run the CLI from outside the checkout: `python -m adapterhub` from the repository root would
# import the source tree's adapterhub/ (without the plugins/ and registry/ mapping) instead of
# the installed wheel.
cd /tmp
DATA=/tmp/ah-train.jsonl
"$PY" - "$DATA" <<'EOF'
import json, sys
words = ["good", "bad"]
with open(sys.argv[1], "w") as f:
    for i in range(96):
        label = words[i % 2]
        f.write(json.dumps({"prompt": f"Review {i}: this film was {label}. Sentiment?", "completion": " positive" if label == "good" else " negative"}) + "\n")
EOF
AH=("$PY" -m adapterhub)
{
  "${AH[@]}" train --base tiny-random-llama --method lora --data "$DATA" --steps 30 --batch-size 8 --lr 3e-3 --device "$DEVICE" --out /tmp/ah-lora --no-progress --json &&
  "${AH[@]}" train --base tiny-random-llama --method prefix-tuning --set num_virtual_tokens=8 --data "$DATA" --steps 20 --batch-size 8 --lr 1e-2 --device "$DEVICE" --out /tmp/ah-prefix --no-progress --json &&
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m adapterhub train --base tiny-random-llama --method lora --data "$DATA" --steps 30 --batch-size 8 --lr 3e-3 --out /tmp/ah-lora-ddp --no-progress --json &&
  "${AH[@]}" generate --base tiny-random-llama --adapter /tmp/ah-lora --device "$DEVICE" --max-new-tokens 4 --json "Review 7: this film was bad. Sentiment?" &&
  "$PY" - <<'EOF'
import json
from pathlib import Path
for d in ("/tmp/ah-lora", "/tmp/ah-prefix", "/tmp/ah-lora-ddp"):
    m = json.loads(Path(d, "manifest.json").read_text())
    print(d, m["method"], json.dumps(m.get("provenance", {}))[:600])
EOF
} > "$OUT/trainer.log" 2>&1 || status=1
tail -40 "$OUT/trainer.log"
cd - >/dev/null

echo "== 3. serving engine (benchmarks/serve_engine.py, SmolLM2 shape with random weights, bf16)"
# The packaged SmolLM2 weights do not travel to the lent machine: the random model has the
# same shape, so the step costs are the real ones (outputs are noise; tokens/s counts them).
timeout 540 "$PY" benchmarks/serve_engine.py --model random --device "$DEVICE" --clients 16 --requests-per-client 4 \
  --workloads base,1,8,64,64_cold,static,hf_cb,chat,bound --out "$OUT/serve_engine-random-qv-r8-$DEVICE.json" --json > "$OUT/serve_engine.log" 2>&1 || status=1
tail -20 "$OUT/serve_engine.log"
echo "device_run: exit $status"
exit $status
