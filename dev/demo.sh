#!/usr/bin/env bash
# make demo: what StaPO is for, on a tiny Llama, in minutes: on the GPU when there is one, else on the CPU.
#   1. builds the binaries;
#   2. make_synthetic_data: digit-task preference pairs (chosen correct, rejected wrong or malformed), held-out
#      prompts, a tiny byte-level BPE tokenizer and a randomly initialised tiny Llama for it;
#   3. prepare_data: chatml shards;
#   4. SFT (--loss sft) on the chosen answers;
#   5. from that same checkpoint, each preference loss ($LOSSES) for $EPOCHS epochs, a checkpoint and an
#      evaluation per epoch: eval reward accuracy, z/mean, entropy/chosen, logps/chosen from the trainer's
#      log, and task accuracy and degeneration rate of greedy replies (eval_synthetic); the trainer also logs
#      greedy replies to two held-out prompts at each evaluation (its --sample-prompts);
#   6. dev/demo_report.sh: a markdown table and an SVG plot of those curves per loss.
# Every setting below can be overridden from the environment (e.g. EPOCHS=8 LR=2e-3 make demo); FLAGS_<loss>
# adds trainer flags to one loss (FLAGS_stapo="--gamma-right 10"); SFT_MODEL=DIR skips SFT and starts every
# loss from DIR (an SFT checkpoint of an earlier run with the same SEED, PAIRS and MODEL_FLAGS).
# DEVICE=cpu|gpu|auto (default auto: the GPU when nvidia-smi lists one and nvcc is there to build train_stapo).
# On the GPU the tiny Llama has head_dim 64 and a vocabulary padded to a multiple of 8, as the CUDA engine
# needs, so its numbers are not those of the CPU table in docs/stability.md.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out/demo}
SEED=${SEED:-1}
PAIRS=${PAIRS:-2000}
EVAL=${EVAL:-200}
DATA_FLAGS=${DATA_FLAGS:-}  # more make_synthetic_data flags, e.g. --malformed-fraction 0
DEVICE=${DEVICE:-auto}
if [ "$DEVICE" = auto ]; then
  DEVICE=cpu
  if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then DEVICE=gpu; fi
fi
# One thread per CPU run: at this size OpenMP's fork/join costs more than the work it splits.
THREADS=${THREADS:-1}
case $DEVICE in
  cpu)
    trainer=train_stapo_cpu
    device_flags=(--threads "$THREADS")
    default_model_flags="--layers 2 --hidden 64 --heads 4 --kv-heads 2 --ffn 192"
    ;;
  gpu)
    trainer=train_stapo
    device_flags=()
    default_model_flags="--layers 2 --hidden 128 --heads 2 --kv-heads 1 --ffn 384 --vocab-multiple 8"
    ;;
  *)
    echo "DEVICE must be cpu, gpu or auto, not '$DEVICE'" >&2
    exit 2
    ;;
esac
MODEL_FLAGS=${MODEL_FLAGS:-$default_model_flags}
# Both are lists of flags: split on spaces on purpose.
read -ra model_flags <<< "$MODEL_FLAGS"
read -ra data_flags <<< "$DATA_FLAGS"
BATCH=${BATCH:-16}
MAX_LENGTH=${MAX_LENGTH:-48}
SFT_EPOCHS=${SFT_EPOCHS:-10}
SFT_LR=${SFT_LR:-3e-3}
LOSSES=${LOSSES:-simpo dpo stapo}
EPOCHS=${EPOCHS:-8}
LR=${LR:-1e-3}

start=$(date +%s)
say() { printf '== [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

BUILD=${BUILD:-build}
say "building the binaries the demo runs ($BUILD; training on the $DEVICE with $trainer)"
# An existing build keeps its configuration (dev/gpu_check.sh's points at carried packages); else the
# Makefile's, which installs missing Debian packages first.
if [ -f "$BUILD/CMakeCache.txt" ]; then cmake -S . -B "$BUILD" >/dev/null; else make -s configure BUILD="$BUILD"; fi
cmake --build "$BUILD" -j "$(nproc)" --target make_synthetic_data prepare_data "$trainer" eval_synthetic \
  generate >/dev/null

rm -rf "$OUT"
mkdir -p "$OUT"
say "data, tokenizer and a random tiny Llama -> $OUT/data, $OUT/init"
./make_synthetic_data --out "$OUT/data" --pairs "$PAIRS" --eval "$EVAL" --seed "$SEED" --model-out "$OUT/init" \
  "${model_flags[@]}" "${data_flags[@]}"
for split in train eval; do
  ./prepare_data --tokenizer "$OUT/init" --template chatml --in "$OUT/data/$split.jsonl" \
    --out "$OUT/data/$split.shard" >/dev/null
done
# Two held-out prompts every trainer answers greedily at each evaluation (stderr and log.jsonl "samples").
head -n 2 "$OUT/data/eval_prompts.jsonl" > "$OUT/data/sample_prompts.jsonl"

train() {  # train NAME EPOCHS LR extra flags...
  local name=$1 epochs=$2 lr=$3
  shift 3
  "./$trainer" --data "$OUT/data/train.shard" --eval-data "$OUT/data/eval.shard" --out "$OUT/$name" \
    --epochs "$epochs" --lr "$lr" --batch-size "$BATCH" --max-length "$MAX_LENGTH" --seed "$SEED" \
    "${device_flags[@]}" --sample-prompts "$OUT/data/sample_prompts.jsonl" "$@" 2> "$OUT/$name.train.log" \
    || { tail -n 20 "$OUT/$name.train.log"; echo "($trainer failed; DEVICE=cpu make demo trains on the CPU)" >&2; exit 1; }
}
evaluate() {  # evaluate CHECKPOINT: one JSON line
  ./eval_synthetic --model "$1" --prompts "$OUT/data/eval_prompts.jsonl" --template chatml --threads 1
}

steps_per_epoch=$(( (PAIRS + BATCH - 1) / BATCH ))
if [ -n "${SFT_MODEL:-}" ]; then
  say "SFT: reusing $SFT_MODEL"
  sft=$SFT_MODEL
else
  say "SFT: $SFT_EPOCHS epochs on the chosen answers"
  train sft "$SFT_EPOCHS" "$SFT_LR" --model "$OUT/init" --loss sft --lr-schedule cosine --warmup-ratio 0.05
  sft="$OUT/sft/final"
fi
sft_eval=$(evaluate "$sft")
say "SFT model: $(echo "$sft_eval" | grep -o '"task_accuracy":[^,]*,"degeneration_rate":[^,]*')"

# metrics.tsv: one row per loss and epoch; epoch 0 is the SFT model (its trainer metrics are not the loss's).
metrics="$OUT/metrics.tsv"
columns="loss epoch step eval/rewards/accuracies eval/z/mean eval/entropy/chosen eval/logps/chosen"
echo "$columns task_accuracy degeneration_rate" | tr ' ' '\t' > "$metrics"
row() {  # row LOSS EPOCH STEP EVAL_LOG_LINE EVAL_SYNTHETIC_JSON
  printf '%s\n%s\n' "$4" "$5" | awk -v loss="$1" -v epoch="$2" -v step="$3" '
    function field(line, key,   at, rest) {
      at = index(line, "\"" key "\":")
      if (at == 0) return "nan"
      rest = substr(line, at + length(key) + 3)
      match(rest, /^[^,}]*/)
      return substr(rest, 1, RLENGTH)
    }
    NR == 1 { log_line = $0 }
    NR == 2 { gen = $0 }
    END {
      printf "%s\t%s\t%s", loss, epoch, step
      n = split("eval/rewards/accuracies eval/z/mean eval/entropy/chosen eval/logps/chosen", keys, " ")
      for (i = 1; i <= n; i++) printf "\t%s", (log_line == "" ? "nan" : field(log_line, keys[i]))
      printf "\t%s\t%s\n", field(gen, "task_accuracy"), field(gen, "degeneration_rate")
    }' >> "$metrics"
}

for loss in $LOSSES; do
  extra=()
  case $loss in dpo | ipo | hinge) extra=(--ref precompute) ;; esac  # their rewards need the reference log-probs
  flags_var="FLAGS_${loss//-/_}"
  read -r -a loss_flags <<< "${!flags_var:-}"
  extra+=("${loss_flags[@]}")
  say "$loss: $EPOCHS epochs from the SFT model ${!flags_var:-}"
  train "$loss" "$EPOCHS" "$LR" --model "$sft" --loss "$loss" "${extra[@]}" \
    --eval-every "$steps_per_epoch" --save-every "$steps_per_epoch"
  grep "^sample at step $(( EPOCHS * steps_per_epoch )):" "$OUT/$loss.train.log" | sed 's/^/   /' || true
  row "$loss" 0 0 "" "$sft_eval"
  for epoch in $(seq 1 "$EPOCHS"); do
    step=$(( epoch * steps_per_epoch ))
    checkpoint="$OUT/$loss/checkpoint-$step"
    [ "$epoch" -eq "$EPOCHS" ] && checkpoint="$OUT/$loss/final"
    log_line=$(grep "^{\"step\":$step,\"eval/" "$OUT/$loss/log.jsonl" || true)
    row "$loss" "$epoch" "$step" "$log_line" "$(evaluate "$checkpoint")"
  done
done

bash dev/demo_report.sh "$metrics" "$OUT"
cat "$OUT/summary.md"
say "done: table $OUT/summary.md, plot $OUT/stability.svg, per-epoch metrics $OUT/metrics.tsv"
