#!/usr/bin/env bash
# The fault suite (issue #18): bad inputs and faults a careless or hostile user would try, against the real
# binaries. Each case asserts a non-zero exit that is not a crash or a hang (exit 1 or 2 within the time
# limit), a message naming the file / field / flag (a regular expression), that no input and no earlier
# checkpoint changed (sha256 before and after) and that no temporary file was left behind.
#   tests/faults/faults.sh [BIN_DIR]      (BIN_DIR: where the binaries are, default the repository root)
# Root-only cases (device nodes made with mknod, a full tmpfs) print SKIP with the reason when not permitted.
# Registered with ctest as `faults` (tests/faults/CMakeLists.txt); ends with "N passed, N failed, N skipped".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "${1:-$ROOT}" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/stapo-faults.XXXXXX")
MNT=""
cleanup() {
  [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
  jobs -p | xargs -r kill 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
passed=0 failed=0 skipped=0
LIMIT=${FAULTS_LIMIT_S:-30}  # seconds per command: a hang is a failure, not a wait

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "PASS $1"; }
skip() { skipped=$((skipped + 1)); say "SKIP $1: $2"; }
failcase() {
  failed=$((failed + 1))
  say "FAIL $1: $2"
  [ -f "$W/logs/$1.log" ] && sed 's/^/    | /' "$W/logs/$1.log" | tail -n 8
}
die() { say "faults: setup failed: $*"; exit 1; }

# Little-endian integers into a file at a byte offset (bash arithmetic is 64-bit two's complement, so a value
# of -1 writes 0xffffffffffffffff).
le_bytes() {  # le_bytes VALUE BYTES: the bytes on stdout
  local s="" i
  for ((i = 0; i < $2; i++)); do s+=$(printf '\\%03o' $((($1 >> (8 * i)) & 255))); done
  printf "$s"
}
put_le() {  # put_le FILE OFFSET VALUE BYTES
  le_bytes "$3" "$4" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
get_le() {  # get_le FILE OFFSET BYTES: the unsigned value
  od -An -tu"$3" -j "$2" -N "$3" "$1" | tr -d ' '
}

# Everything a case must not change: the inputs and the earlier run's checkpoints.
snapshot() { (cd "$W" && find base -type f -print0 | sort -z | xargs -0 sha256sum) >"$W/snapshot.$1"; }
leftovers() { find "$W" -path "$W/logs" -prune -o \( -name '*.tmp*' -o -name '.*.tmp' \) -print | head -n 3; }

# expect NAME REGEX CMD...: CMD must exit 1 or 2 within LIMIT seconds, print REGEX (case-insensitive, stdout or
# stderr), leave base/ unchanged and leave no temporary file.
expect() {
  local name=$1 regex=$2 rc
  shift 2
  timeout -s KILL "$LIMIT" "$@" >"$W/logs/$name.log" 2>&1 </dev/null
  rc=$?
  finish_case "$name" "$regex" "$rc"
}
finish_case() {
  local name=$1 regex=$2 rc=$3 left
  if [ "$rc" -eq 137 ] || [ "$rc" -eq 124 ]; then failcase "$name" "hung (killed after ${LIMIT}s)"; return 1; fi
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then failcase "$name" "exit $rc (want 1 or 2: a clear refusal)"; return 1; fi
  left=$(leftovers)
  if [ -n "$left" ]; then failcase "$name" "temporary files left: $left"; find "$W" -name '*.tmp*' -exec rm -rf {} +; return 1; fi
  if ! grep -qiE -- "$regex" "$W/logs/$name.log"; then failcase "$name" "message does not match /$regex/"; return 1; fi
  snapshot after
  if ! cmp -s "$W/snapshot.before" "$W/snapshot.after"; then
    failcase "$name" "an input or earlier checkpoint changed: $(diff "$W/snapshot.before" "$W/snapshot.after" | head -n 2 | tr '\n' ' ')"
    snapshot before
    return 1
  fi
  pass "$name"
}
# check NAME CONDITION-DESCRIPTION TEST...: a plain assertion (after a command that must succeed or fail).
check() {
  local name=$1 what=$2
  shift 2
  if "$@"; then pass "$name"; else failcase "$name" "$what"; fi
}

mkdir -p "$W/logs" "$W/base" "$W/c"
for bin in make_synthetic_data prepare_data train_stapo_cpu score generate model_convert tokenize; do
  [ -x "$B/$bin" ] || die "$B/$bin not built (cmake --build build --target stapo_cpu_binaries)"
done
start=$(date +%s)
# 16 GB of address space: an absurd allocation fails at once instead of swapping the machine. FAULTS_ULIMIT_KB=unlimited
# for an AddressSanitizer build, whose shadow memory alone reserves terabytes of address space.
ulimit -v "${FAULTS_ULIMIT_KB:-16000000}"

# ---- setup: a tiny tokenizer, model and data; one short run with checkpoints (base/ is then read-only input)
"$B/make_synthetic_data" --out "$W/base/data" --pairs 40 --eval 8 --seed 7 --model-out "$W/base/model" \
  --layers 1 --hidden 32 --heads 2 --kv-heads 1 --ffn 64 >"$W/logs/setup.log" 2>&1 || die "make_synthetic_data"
for split in train eval; do
  "$B/prepare_data" --tokenizer "$W/base/model" --template chatml --in "$W/base/data/$split.jsonl" \
    --out "$W/base/$split.bin" >>"$W/logs/setup.log" 2>&1 || die "prepare_data $split"
done
TRAIN=("$B/train_stapo_cpu" --threads 2 --batch-size 4 --max-length 64)
"${TRAIN[@]}" --model "$W/base/model" --data "$W/base/train.bin" --out "$W/base/run" --max-steps 2 --save-every 1 \
  >>"$W/logs/setup.log" 2>&1 || die "train_stapo_cpu (see $W/logs/setup.log)"
[ -d "$W/base/run/checkpoint-1" ] && [ -d "$W/base/run/final" ] || die "the setup run wrote no checkpoint-1/final"
snapshot before
M="$W/base/model"
say "setup: $(( $(date +%s) - start ))s"

# ===== crashes and hangs =====
# A pair whose token offset wraps: offset + lengths overflows to a small number and passes a naive bound.
cp "$W/base/train.bin" "$W/c/wrap.bin"
put_le "$W/c/wrap.bin" 512 -2 8
expect shard_offset_wraps 'wrap\.bin.*pair 0' "$B/score" --model "$M" --data "$W/c/wrap.bin" --out "$W/c/wrap.jsonl"
cp "$W/base/train.bin" "$W/c/idwrap.bin"
put_le "$W/c/idwrap.bin" $((512 + 24)) -1 8  # pair 0's id offset
expect shard_id_offset_wraps 'idwrap\.bin.*pair 0' "$B/score" --model "$M" --data "$W/c/idwrap.bin" \
  --out "$W/c/idwrap.jsonl"
# num_pairs so large that num_pairs x 32 wraps the section arithmetic.
cp "$W/base/train.bin" "$W/c/count.bin"
put_le "$W/c/count.bin" 16 $((1 << 59)) 8
expect shard_count_overflows 'count\.bin' "$B/score" --model "$M" --data "$W/c/count.bin" --out "$W/c/count.jsonl"
# safetensors: a shape whose element count overflows 64 bits (2^32 x 2^32 x 4 bytes wraps to 0).
mkdir -p "$W/c/stshape" && cp "$M"/*.json "$W/c/stshape/"
hdr='{"model.norm.weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'
{ le_bytes ${#hdr} 8; printf '%s' "$hdr"; } >"$W/c/stshape/model.safetensors"
expect safetensors_shape_overflows 'model\.norm\.weight.*(overflow|too large)' "$B/model_convert" \
  --in "$W/c/stshape" --out "$W/c/stshape-out"
for t in 100000 -3; do
  expect "threads_$t" '--threads' "$B/score" --model "$M" --data "$W/base/train.bin" --out "$W/c/t.jsonl" --threads "$t"
done
expect train_threads_huge '--threads' "${TRAIN[@]}" --threads 100000 --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/threads-run"
expect generate_threads_huge '--threads' "$B/generate" --model "$M" --prompt hi --threads 100000
# A sharded index pointing at a FIFO (opening it would block forever) and outside the model folder.
mkdir -p "$W/c/fifo" && cp "$M"/*.json "$W/c/fifo/" && rm -f "$W/c/fifo/model.safetensors"
mkfifo "$W/c/fifo/model-00001-of-00001.safetensors"
printf '{"metadata":{},"weight_map":{"model.norm.weight":"model-00001-of-00001.safetensors"}}' \
  >"$W/c/fifo/model.safetensors.index.json"
expect index_points_at_fifo 'model-00001-of-00001\.safetensors.*not a regular file' "$B/model_convert" \
  --in "$W/c/fifo" --out "$W/c/fifo-out"
mkdir -p "$W/c/trav" && cp "$M"/*.json "$W/c/trav/"
cp "$M/model.safetensors" "$W/c/outside.safetensors"
printf '{"metadata":{},"weight_map":{"model.norm.weight":"../outside.safetensors"}}' \
  >"$W/c/trav/model.safetensors.index.json"
expect index_path_traversal 'weight_map.*\.\./outside\.safetensors' "$B/model_convert" --in "$W/c/trav" \
  --out "$W/c/trav-out"
mkdir -p "$W/c/cfgfifo" && cp "$M/model.safetensors" "$M/tokenizer.json" "$W/c/cfgfifo/" && mkfifo "$W/c/cfgfifo/config.json"
expect config_is_fifo 'config\.json.*not a regular file' "$B/generate" --model "$W/c/cfgfifo" --prompt hi
mkfifo "$W/c/shard.fifo"
expect shard_is_fifo 'shard\.fifo.*not a regular file' "$B/score" --model "$M" --data "$W/c/shard.fifo" \
  --out "$W/c/f.jsonl"

# ===== data loss =====
cp "$W/base/data/train.jsonl" "$W/c/same.jsonl"
sum=$(sha256sum <"$W/c/same.jsonl")
expect prepare_out_is_input 'same\.jsonl.*(input|same file)' "$B/prepare_data" --tokenizer "$M" --template chatml \
  --in "$W/c/same.jsonl" --out "$W/c/same.jsonl"
check prepare_out_is_input_kept "the input was replaced" test "$sum" = "$(sha256sum <"$W/c/same.jsonl")"
ln -sf same.jsonl "$W/c/same-link.jsonl"
expect prepare_out_is_input_by_link 'same-link\.jsonl.*(input|same file)' "$B/prepare_data" --tokenizer "$M" \
  --template chatml --in "$W/c/same.jsonl" --out "$W/c/same-link.jsonl"
cp "$W/base/train.bin" "$W/c/scored.bin"
sum=$(sha256sum <"$W/c/scored.bin")
expect score_out_is_data 'scored\.bin.*(input|same file)' "$B/score" --model "$M" --data "$W/c/scored.bin" \
  --out "$W/c/scored.bin"
check score_out_is_data_kept "the shard was replaced" test "$sum" = "$(sha256sum <"$W/c/scored.bin")"
mkdir -p "$W/c/outdir"
expect prepare_out_is_directory 'outdir.*not a regular file' "$B/prepare_data" --tokenizer "$M" --template chatml \
  --in "$W/base/data/train.jsonl" --out "$W/c/outdir"
if mkdir -p "$W/c/dev" && mknod "$W/c/dev/null" c 1 3 2>/dev/null; then
  expect prepare_out_is_device 'dev/null.*not a regular file' "$B/prepare_data" --tokenizer "$M" --template chatml \
    --in "$W/base/data/train.jsonl" --out "$W/c/dev/null"
  check prepare_out_is_device_kept "the device node was replaced by a regular file" test -c "$W/c/dev/null"
  expect score_out_is_device 'dev/null.*not a regular file' "$B/score" --model "$M" --data "$W/base/train.bin" \
    --out "$W/c/dev/null"
  check score_out_is_device_kept "the device node was replaced by a regular file" test -c "$W/c/dev/null"
else
  skip prepare_out_is_device "mknod not permitted (needs root)"
  skip score_out_is_device "mknod not permitted (needs root)"
fi
cp -r "$M" "$W/c/conv"
sum=$(cd "$W/c/conv" && sha256sum model.safetensors config.json)
expect model_convert_in_is_out 'conv.*same' "$B/model_convert" --in "$W/c/conv" --out "$W/c/conv/"
check model_convert_in_is_out_kept "the input model changed" test "$sum" = "$(cd "$W/c/conv" && sha256sum model.safetensors config.json)"
"$B/model_convert" --in "$M" --out "$W/c/conv-default" >"$W/logs/model_convert_keeps_dtype.log" 2>&1
check model_convert_keeps_dtype "the default --dtype downcast an F32 checkpoint" \
  grep -q '"F32"' "$W/c/conv-default/model.safetensors"
# A final evaluation that fails (a sample prompt longer than the context) must not lose the trained run.
head -c 3000 /dev/zero | tr '\0' 'a' | sed 's/aaaa/a a /g' >"$W/c/long_prompt.txt"
echo >>"$W/c/long_prompt.txt"
expect final_eval_fails 'max_position_embeddings' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/evalfail" --max-steps 1 --sample-prompts "$W/c/long_prompt.txt"
check final_eval_fails_kept_run "the trained weights were not saved before the failing final evaluation" \
  test -f "$W/c/evalfail/final/model.safetensors"

# ===== silent wrong results =====
# Reference log-probs stored by one model, then a DPO run of another model on that shard.
cp "$W/base/train.bin" "$W/c/ref.bin"
"${TRAIN[@]}" --model "$M" --data "$W/c/ref.bin" --out "$W/c/refrun" --max-steps 1 --loss dpo --ref precompute \
  >"$W/logs/ref_setup.log" 2>&1 || failcase ref_setup "the reference pass failed"
"$B/model_convert" --in "$M" --out "$W/c/other" --dtype bf16 >>"$W/logs/ref_setup.log" 2>&1
cp "$M"/tokenizer* "$W/c/other/"
expect reference_of_other_model 'ref\.bin.*reference' "${TRAIN[@]}" --model "$W/c/other" --data "$W/c/ref.bin" \
  --out "$W/c/otherrun" --max-steps 1 --loss dpo
expect score_reference_of_other_model 'ref\.bin.*reference' "$B/score" --model "$W/c/other" --data "$W/c/ref.bin" \
  --out "$W/c/other.jsonl" --loss dpo
# Config values out of range, fractional or wider than 32 bits: refused naming the field.
cfg_case() {  # cfg_case NAME FIELD VALUE
  mkdir -p "$W/c/cfg-$1" && cp "$M/model.safetensors" "$M/tokenizer.json" "$W/c/cfg-$1/"
  sed -E "s/(\"$2\": )[^,}]*/\1$3/" "$M/config.json" >"$W/c/cfg-$1/config.json"
  grep -q "\"$2\": $3" "$W/c/cfg-$1/config.json" || { failcase "config_$1" "could not set $2 to $3"; return; }
  expect "config_$1" "config\.json.*$2" "$B/generate" --model "$W/c/cfg-$1" --prompt hi --max-new-tokens 2
}
cfg_case rope_theta_zero rope_theta 0.0
cfg_case rope_theta_negative rope_theta -5.0
cfg_case vocab_past_2_32 vocab_size 4294967396
cfg_case fractional_hidden hidden_size 32.9
cfg_case fractional_vocab vocab_size 278.9
cfg_case eps_above_one rms_norm_eps 5.0
cfg_case absurd_hidden hidden_size 1000000000
cfg_case absurd_layers num_hidden_layers 100000000
cfg_case absurd_ffn intermediate_size 2000000000
cfg_case negative_max_pos max_position_embeddings -1
for flag in "--lr -1" "--lr 0" "--lr nan" "--adam-beta1 2" "--adam-beta2 -0.5" "--adam-eps -1" "--weight-decay -1" \
  "--max-grad-norm -1" "--warmup-ratio 1.5" "--grad-accum 0" "--batch-size 0" "--max-length 0" "--epochs -1" \
  "--max-steps -5" "--eval-every -1" "--save-every -1" "--beta -1" "--beta inf"; do
  read -r f v <<<"$flag"
  expect "flag${f}_$v" "$f" "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/flagrun$f$v" "$f" "$v"
done
expect score_batch_zero '--batch-size' "$B/score" --model "$M" --data "$W/base/train.bin" --out "$W/c/s.jsonl" \
  --batch-size 0
expect prepare_max_length_negative '--max-length' "$B/prepare_data" --tokenizer "$M" --template chatml \
  --in "$W/base/data/train.jsonl" --out "$W/c/ml.bin" --max-length -4
expect generate_top_p_nan '--top-p' "$B/generate" --model "$M" --prompt hi --top-p nan
# Resuming with other settings than the checkpoint's.
for change in "--batch-size 2" "--beta 0.5" "--loss simpo" "--lr-schedule cosine" "--margin-left 0.6" "--lr 1e-2"; do
  read -r f v <<<"$change"
  rm -rf "$W/c/resume" && cp -r "$W/base/run" "$W/c/resume"
  expect "resume_changed${f}" "$f" "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/resume" \
    --max-steps 2 --resume "$W/c/resume/checkpoint-1" "$f" "$v"
done
# A run that skips most of its steps as non-finite must not end "done" with exit 0.
expect skipped_most_steps 'skipped' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/nonfinite" \
  --max-steps 4 --skip-nonfinite --lr 1e30 --max-grad-norm 0 --warmup-ratio 0

# ===== unclear messages =====
rm -rf "$W/c/resume" && cp -r "$W/base/run" "$W/c/resume"
sed -i 's/"step": 1/"step": "one"/' "$W/c/resume/checkpoint-1/trainer_state.json"
expect trainer_state_bad_type 'trainer_state\.json.*step' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/resume" --max-steps 2 --resume "$W/c/resume/checkpoint-1"
rm -rf "$W/c/resume" && cp -r "$W/base/run" "$W/c/resume"
sed -i '/"updates"/d' "$W/c/resume/checkpoint-1/trainer_state.json"
expect trainer_state_missing_key 'trainer_state\.json.*updates' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/resume" --max-steps 2 --resume "$W/c/resume/checkpoint-1"
rm -rf "$W/c/resume" && cp -r "$W/base/run" "$W/c/resume"
opt="$W/c/resume/checkpoint-1/optimizer.bin"
put_le "$opt" $(( $(stat -c %s "$opt") / 2 )) 12345 4
expect optimizer_state_corrupt 'optimizer\.bin.*checksum' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/resume" --max-steps 2 --resume "$W/c/resume/checkpoint-1"
# An id outside the vocabulary: named with the shard and the pair when the shard is opened.
cp "$W/base/train.bin" "$W/c/oov.bin"
put_le "$W/c/oov.bin" $(( $(stat -c %s "$W/c/oov.bin") - 4 )) 2147483647 4
expect shard_oov_id 'oov\.bin.*pair [0-9]+.*2147483647' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --eval-data "$W/c/oov.bin" --out "$W/c/oovrun" --max-steps 1
expect shard_oov_id_score 'oov\.bin.*pair [0-9]+.*2147483647' "$B/score" --model "$M" --data "$W/c/oov.bin" \
  --out "$W/c/oov.jsonl"
# A token changed to another valid id, and a stored reference log-prob changed: only a checksum sees them.
cp "$W/base/train.bin" "$W/c/flip.bin"
last=$(( $(stat -c %s "$W/c/flip.bin") - 4 ))
put_le "$W/c/flip.bin" "$last" $(( $(get_le "$W/c/flip.bin" "$last" 4) == 1 ? 2 : 1 )) 4
expect shard_checksum 'flip\.bin.*checksum' "$B/score" --model "$M" --data "$W/c/flip.bin" --out "$W/c/flip.jsonl"
cp "$W/c/ref.bin" "$W/c/refflip.bin"
put_le "$W/c/refflip.bin" $(( $(get_le "$W/c/refflip.bin" 80 8) + 4 )) 1065353216 4  # Sref(rejected) of pair 0 = 1.0
expect shard_reference_checksum 'refflip\.bin.*checksum' "$B/score" --model "$M" --data "$W/c/refflip.bin" \
  --out "$W/c/refflip.jsonl" --loss dpo
expect absurd_config_message 'config\.json.*hidden_size' "$B/model_convert" --in "$W/c/cfg-absurd_hidden" \
  --out "$W/c/absurd-out"

# ===== leftovers and concurrency =====
if [ "$(id -u)" -eq 0 ] && mkdir -p "$W/c/full" && mount -t tmpfs -o size=8k tmpfs "$W/c/full" 2>/dev/null; then
  MNT="$W/c/full"
  expect disk_full_prepare 'no space' "$B/prepare_data" --tokenizer "$M" --template chatml \
    --in "$W/base/data/train.jsonl" --out "$W/c/full/train.bin"
  expect disk_full_model_convert 'no space' "$B/model_convert" --in "$M" --out "$W/c/full/model" --dtype f32
  expect disk_full_checkpoint 'no space' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
    --out "$W/c/full/run" --max-steps 1
  check disk_full_nothing_left "files left on the full disk: $(ls -A "$W/c/full" | tr '\n' ' ')" \
    test -z "$(find "$W/c/full" -name '*tmp*')"
  umount "$W/c/full" && MNT=""
else
  skip disk_full "mounting a small tmpfs is not permitted (needs root)"
fi
# A new run into the folder of an old one: refused unless --overwrite (then the old log is not appended to).
rm -rf "$W/c/again" && cp -r "$W/base/run" "$W/c/again"
expect new_run_into_old_out '--overwrite' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/again" --max-steps 1
"${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/again" --max-steps 1 --overwrite \
  >"$W/logs/overwrite.log" 2>&1
check overwrite_starts_a_new_log "--overwrite kept the old run's log lines" \
  test "$(grep -c '"loss"' "$W/c/again/log.jsonl" 2>/dev/null)" = 1
# Two runs into one folder: the second is refused while the first holds the lock.
mkdir -p "$W/c/locked"
if command -v flock >/dev/null; then
  flock "$W/c/locked/.lock" sleep 60 &
  sleep 0.3
  expect run_dir_locked 'locked|in use' "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" \
    --out "$W/c/locked" --max-steps 1 --overwrite
  kill %1 2>/dev/null
  wait 2>/dev/null
else
  skip run_dir_locked "flock(1) not installed"
fi
# A rename that fails (the output is a directory): no temporary file stays behind (checked by expect).
mkdir -p "$W/c/isdir.jsonl"
expect score_out_is_directory 'isdir\.jsonl.*not a regular file' "$B/score" --model "$M" --data "$W/base/train.bin" \
  --out "$W/c/isdir.jsonl"
# kill -9 during checkpoint saves: every checkpoint left is complete and resumes.
rm -rf "$W/c/killed"
"${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/killed" --max-steps 40 --save-every 1 \
  >"$W/logs/killed.log" 2>&1 &
victim=$!
for _ in $(seq 1 100); do [ -d "$W/c/killed/checkpoint-3" ] && break; sleep 0.05; done
kill -9 "$victim" 2>/dev/null
wait "$victim" 2>/dev/null
last_ckpt=$(ls -d "$W/c/killed"/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -n 1)
if [ -z "$last_ckpt" ]; then
  failcase kill_during_save "no checkpoint was written before the kill"
else
  "${TRAIN[@]}" --model "$M" --data "$W/base/train.bin" --out "$W/c/killed" --max-steps 40 --save-every 100 \
    --resume "$last_ckpt" >"$W/logs/kill_during_save.log" 2>&1
  check kill_during_save "resuming from $last_ckpt after kill -9 failed" test -f "$W/c/killed/final/optimizer.bin"
fi

snapshot after
check inputs_untouched "base/ changed during the suite" cmp -s "$W/snapshot.before" "$W/snapshot.after"
say "faults: $(( $(date +%s) - start ))s"
say "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
