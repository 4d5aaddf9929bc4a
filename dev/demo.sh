#!/usr/bin/env bash
# make demo: StaPO and the one-sided losses on on-policy pairs, on a tiny Llama, in minutes: on the GPU when
# there is one, else on the CPU.
#   1. builds the binaries;
#   2. make_synthetic_data: the digit task's problems with correct answers (and off-policy pairs: a near miss
#      or malformed rejected answer), held-out prompts, a tiny byte-level BPE tokenizer and a random tiny Llama;
#   3. SFT (--loss sft) on the correct answers;
#   4. sample_pairs: on-policy pairs as in the StaPO paper's instruct setups: k replies of the SFT model per
#      training (and held-out) prompt at temperature 1, checked by the task's verifier; chosen = a correct reply,
#      rejected = an incorrect one (PAIRS=offpolicy trains on make_synthetic_data's pairs instead: the control
#      that shows the reversal hazard);
#   5. from that same SFT checkpoint, each preference loss ($LOSSES: SimPO, DPO, IPO, StaPO with the spec's
#      defaults, and StaPO with --right-margin saturate, a documented deviation) for $EPOCHS epochs, an evaluation and a
#      checkpoint per epoch, epoch 0 being the SFT model itself: the trainer's eval metrics on the held-out pairs
#      (reward accuracy, Δ quantiles, z, entropy, chosen log-prob) and eval_synthetic on the held-out prompts
#      (task accuracy and degeneration of greedy replies; the entropy of the model's own greedy and sampled
#      replies, distinct-2 and length of sampled ones);
#   6. dev/demo_report.sh: a markdown table and an SVG plot of those curves per loss.
# Every setting below can be overridden from the environment (e.g. EPOCHS=8 LR=2e-3 make demo); LOSSES may also
# name the variant stapo-saturate (StaPO with --right-margin saturate); FLAGS_<loss> adds trainer flags to one
# loss (FLAGS_stapo="--lambda-right 0.5"). Steps 2-4 go to $PREP (default
# $OUT/prep) and are reused when $PREP/done exists (dev/study.sh shares one per seed between learning rates;
# PREP_ONLY=1 stops after them).
# DEVICE=cpu|gpu|auto (default auto: the GPU when nvidia-smi lists one and nvcc is there to build train_stapo).
# JOBS: preference runs at a time (default 2 on the CPU, one thread each; 1 on the GPU).
# On the GPU the tiny Llama has head_dim 64 and a vocabulary padded to a multiple of 8, as the CUDA engine
# needs, so its numbers are not those of the CPU table in docs/stability.md.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out/demo}
PREP=${PREP:-$OUT/prep}
SEED=${SEED:-1}
TRAIN_PROMPTS=${TRAIN_PROMPTS:-2000}
EVAL=${EVAL:-200}
DATA_FLAGS=${DATA_FLAGS:-}  # more make_synthetic_data flags
PAIRS=${PAIRS:-onpolicy}    # onpolicy | offpolicy
SAMPLES=${SAMPLES:-8}       # replies per prompt for the on-policy pairs
EVAL_SAMPLED=${EVAL_SAMPLED:-4}  # sampled replies per held-out prompt for the entropy and distinct-2 columns
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
case $PAIRS in
  onpolicy | offpolicy) ;;
  *)
    echo "PAIRS must be onpolicy or offpolicy, not '$PAIRS'" >&2
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
LOSSES=${LOSSES:-simpo dpo ipo stapo stapo-saturate}
EPOCHS=${EPOCHS:-10}
LR=${LR:-1e-3}

start=$(date +%s)
say() { printf '== [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

BUILD=${BUILD:-build}
if [ -z "${SKIP_BUILD:-}" ]; then
  say "building the binaries the demo runs ($BUILD; training on the $DEVICE with $trainer)"
  # An existing build keeps its configuration (dev/gpu_check.sh's points at carried packages); else the
  # Makefile's, which installs missing Debian packages first.
  if [ -f "$BUILD/CMakeCache.txt" ]; then cmake -S . -B "$BUILD" >/dev/null; else make -s configure BUILD="$BUILD"; fi
  cmake --build "$BUILD" -j "$(nproc)" --target make_synthetic_data prepare_data "$trainer" eval_synthetic \
    sample_pairs >/dev/null
fi

train() {  # train NAME LOG_DIR EPOCHS LR TRAIN_SHARD EVAL_SHARD extra flags...
  local name=$1 dir=$2 epochs=$3 lr=$4 train_shard=$5 eval_shard=$6
  shift 6
  "./$trainer" --data "$train_shard" --eval-data "$eval_shard" --out "$dir/$name" --epochs "$epochs" --lr "$lr" \
    --batch-size "$BATCH" --max-length "$MAX_LENGTH" --seed "$SEED" "${device_flags[@]}" \
    --sample-prompts "$PREP/sample_prompts.jsonl" "$@" 2> "$dir/$name.train.log" \
    || { tail -n 20 "$dir/$name.train.log"; echo "($trainer failed; DEVICE=cpu make demo trains on the CPU)" >&2; exit 1; }
}
evaluate() {  # evaluate CHECKPOINT: one JSON line
  ./eval_synthetic --model "$1" --prompts "$PREP/data/eval_prompts.jsonl" --template chatml --threads 1 \
    --sampled "$EVAL_SAMPLED" --seed "$SEED"
}
shard() {  # shard IN.jsonl OUT.shard: its counts in OUT.shard.log
  ./prepare_data --tokenizer "$PREP/init" --template chatml --in "$1" --out "$2" > "$2.log"
}

if [ -f "$PREP/done" ]; then
  say "reusing data, SFT model and sampled pairs in $PREP"
else
  rm -rf "$PREP"
  mkdir -p "$PREP"
  say "data, tokenizer and a random tiny Llama -> $PREP/data, $PREP/init"
  ./make_synthetic_data --out "$PREP/data" --pairs "$TRAIN_PROMPTS" --eval "$EVAL" --seed "$SEED" \
    --model-out "$PREP/init" "${model_flags[@]}" "${data_flags[@]}"
  for split in train eval; do shard "$PREP/data/$split.jsonl" "$PREP/data/$split.shard"; done
  # Two held-out prompts every trainer answers greedily at each evaluation (stderr and log.jsonl "samples").
  head -n 2 "$PREP/data/eval_prompts.jsonl" > "$PREP/sample_prompts.jsonl"
  say "SFT: $SFT_EPOCHS epochs on the correct answers"
  train sft "$PREP" "$SFT_EPOCHS" "$SFT_LR" "$PREP/data/train.shard" "$PREP/data/eval.shard" --model "$PREP/init" \
    --loss sft --lr-schedule cosine --warmup-ratio 0.05 --step0-pairs 0
  say "on-policy pairs: $SAMPLES replies of the SFT model per prompt"
  mkdir -p "$PREP/onpolicy"
  for split in train eval; do
    ./sample_pairs --model "$PREP/sft/final" --prompts "$PREP/data/$split.jsonl" --out "$PREP/onpolicy/$split.jsonl" \
      --samples "$SAMPLES" --seed "$SEED" --template chatml 2> "$PREP/onpolicy/$split.log"
    sed "s/^/   $split: /" "$PREP/onpolicy/$split.log" | grep -v "sample_pairs" || true
    shard "$PREP/onpolicy/$split.jsonl" "$PREP/onpolicy/$split.shard"
  done
  evaluate "$PREP/sft/final" > "$PREP/sft_eval.json"
  touch "$PREP/done"
fi
sft="$PREP/sft/final"
[ -n "${PREP_ONLY:-}" ] && { say "prepared $PREP"; exit 0; }
say "SFT model: $(grep -o '"task_accuracy":[^,]*,"degeneration_rate":[^,]*' "$PREP/sft_eval.json")"
case $PAIRS in
  onpolicy) pairs_dir="$PREP/onpolicy" ;;
  offpolicy) pairs_dir="$PREP/data" ;;
esac

mkdir -p "$OUT"
# metrics.tsv: one row per loss and epoch; epoch 0 is the SFT model.
log_keys="eval/rewards/accuracies eval/delta/p05 eval/delta/p50 eval/delta/p95 eval/z/mean eval/entropy/chosen"
log_keys+=" eval/logps/chosen"
gen_keys="task_accuracy degeneration_rate greedy_entropy sampled_entropy distinct_2 sampled_length"
metrics="$OUT/metrics.tsv"
echo "loss epoch step $log_keys $gen_keys" | tr ' ' '\t' > "$metrics"
row() {  # row LOSS EPOCH STEP EVAL_LOG_LINE EVAL_SYNTHETIC_JSON
  printf '%s\n%s\n' "$4" "$5" | awk -v loss="$1" -v epoch="$2" -v step="$3" -v log_keys="$log_keys" \
    -v gen_keys="$gen_keys" '
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
      n = split(log_keys, keys, " ")
      for (i = 1; i <= n; i++) printf "\t%s", field(log_line, keys[i])
      n = split(gen_keys, keys, " ")
      for (i = 1; i <= n; i++) printf "\t%s", field(gen, keys[i])
      printf "\n"
    }'
}

train_pairs=$(awk '/^pairs written/ { print $3 }' "$pairs_dir/train.shard.log")
steps_per_epoch=$(( (train_pairs + BATCH - 1) / BATCH ))
# run_loss LOSS: train it from the SFT model, evaluate every epoch's checkpoint; its metrics rows go to
# $OUT/LOSS.rows and what it prints to $OUT/LOSS.console (shown in $LOSSES order as the runs end).
run_loss() {
  local loss=$1
  # A run is named by its loss, or (stapo-saturate) by a loss and the flag that makes it a variant.
  extra=(--loss "$loss")
  case $loss in
    # their rewards need the reference log-probs
    dpo | cdpo | robust | ipo | hinge | exo_pair | nca_pair | bco_pair | sppo_hard | apo_zero | apo_down)
      extra+=(--ref precompute) ;;
    stapo-saturate) extra=(--loss stapo --right-margin saturate) ;;
  esac
  flags_var="FLAGS_${loss//-/_}"
  read -r -a loss_flags <<< "${!flags_var:-}"
  extra+=("${loss_flags[@]}")
  # --ref precompute writes into the shard: each loss gets its own copy.
  cp "$pairs_dir/train.shard" "$OUT/$loss.train.shard"
  cp "$pairs_dir/eval.shard" "$OUT/$loss.eval.shard"
  # --overwrite: a second `make demo` (EPOCHS=8 LR=2e-3 make demo) replaces this loss's earlier run in $OUT, which
  # the trainer otherwise refuses.
  train "$loss" "$OUT" "$EPOCHS" "$LR" "$OUT/$loss.train.shard" "$OUT/$loss.eval.shard" --model "$sft" \
    "${extra[@]}" --eval-every "$steps_per_epoch" --save-every "$steps_per_epoch" --overwrite
  grep -E "^(warning|  above|  Δ|  z )" "$OUT/$loss.train.log" | sed 's/^/   /' || true
  grep "^sample at step $(( EPOCHS * steps_per_epoch )):" "$OUT/$loss.train.log" | sed 's/^/   /' || true
  for epoch in $(seq 0 "$EPOCHS"); do
    step=$(( epoch * steps_per_epoch ))
    checkpoint="$OUT/$loss/checkpoint-$step"
    [ "$epoch" -eq 0 ] && checkpoint=$sft
    [ "$epoch" -eq "$EPOCHS" ] && checkpoint="$OUT/$loss/final"
    log_line=$(grep "^{\"step\":$step,\"eval/" "$OUT/$loss/log.jsonl" || true)
    if [ "$epoch" -eq 0 ]; then gen=$(cat "$PREP/sft_eval.json"); else gen=$(evaluate "$checkpoint"); fi
    row "$loss" "$epoch" "$step" "$log_line" "$gen" >> "$OUT/$loss.rows"
  done
  rm -f "$OUT/$loss.train.shard" "$OUT/$loss.eval.shard"
}

# The runs are independent: $JOBS at a time (on the CPU 2, one thread each: the two cores the demo's time is
# stated for; on the GPU one, since they would share the card).
JOBS=${JOBS:-$([ "$DEVICE" = cpu ] && echo 2 || echo 1)}
read -ra losses <<< "$LOSSES"
pids=()
finish() {  # finish I: wait for the I-th run, show what it printed, append its rows
  local status=0
  wait "${pids[$1]}" || status=$?
  cat "$OUT/${losses[$1]}.console"
  [ "$status" -eq 0 ] || { say "${losses[$1]} failed"; exit 1; }
  cat "$OUT/${losses[$1]}.rows" >> "$metrics"
  say "${losses[$1]}: finished"
  rm -f "$OUT/${losses[$1]}.console" "$OUT/${losses[$1]}.rows"
}
for i in "${!losses[@]}"; do
  # At most $JOBS running, shown in order: wait for the oldest one first.
  if [ "$i" -ge "$JOBS" ]; then finish $(( i - JOBS )); fi
  rm -f "$OUT/${losses[$i]}.rows"
  flags_var="FLAGS_${losses[$i]//-/_}"
  say "start ${losses[$i]}: $EPOCHS epochs on the $PAIRS pairs from the SFT model ${!flags_var:-}"
  run_loss "${losses[$i]}" > "$OUT/${losses[$i]}.console" 2>&1 &
  pids[i]=$!
done
for (( i = ${#losses[@]} - JOBS; i < ${#losses[@]}; i++ )); do
  if [ "$i" -ge 0 ]; then finish "$i"; fi
done

bash dev/demo_report.sh "$metrics" "$OUT"
cat "$OUT/summary.md"
say "done: table $OUT/summary.md, plot $OUT/stability.svg, per-epoch metrics $OUT/metrics.tsv"
