#!/usr/bin/env bash
# Tokens/s of train_stapo_cpu on a small config: a tiny random Llama and synthetic digit-task pairs
# (make_synthetic_data), tokenized by prepare_data, trained for STEPS steps of --loss stapo; prints the median
# of the JSONL log's tokens_per_s (non-padding tokens through forward + backward + AdamW per second of step).
#   THREADS=2 STEPS=30 dev/bench/train_cpu.sh [--layers 4 --hidden 256 --heads 8 --kv-heads 4 --ffn 688]
# Binaries are taken from the repository root (`make` builds them).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2}
STEPS=${STEPS:-30}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
shape=("$@")
[ ${#shape[@]} -eq 0 ] && shape=(--layers 4 --hidden 256 --heads 8 --kv-heads 4 --ffn 688)
./make_synthetic_data --out "$WORK/data" --pairs 2048 --eval 0 --seed 1 --model-out "$WORK/model" "${shape[@]}" > /dev/null 2>&1
./prepare_data --tokenizer "$WORK/model" --template chatml --in "$WORK/data/train.jsonl" --out "$WORK/train.bin" \
  --max-length 128 --max-prompt-length 64 > /dev/null 2>&1
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
./train_stapo_cpu --model "$WORK/model" --data "$WORK/train.bin" --out "$WORK/run" --loss stapo --lr 1e-3 \
  --batch-size 16 --max-length 128 --max-steps "$STEPS" --threads "$THREADS" > /dev/null 2>&1
python3 - "$WORK/run/log.jsonl" "$THREADS" "${shape[*]}" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
tps = [l["tokens_per_s"] for l in lines[1:]]  # the first step warms caches
print(f"train_stapo_cpu ({sys.argv[3]}, batch 16 pairs, T<=128, threads {sys.argv[2]}): "
      f"median {statistics.median(tps):.0f} tokens/s over {len(tps)} steps (min {min(tps):.0f}, max {max(tps):.0f})")
PY
