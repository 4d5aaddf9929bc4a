#!/usr/bin/env bash
# train_stapo_cpu under mpirun, as a user runs it (the in-process checks of the arithmetic are test_data_parallel):
#   - 2 ranks with --batch-size 2 log the same steps as 1 rank with --grad-accum 2 (loss and grad_norm within
#     float rounding, 1e-5 relative), with --ref precompute computed by rank 0 alone; one log, one "done"; the eval
#     samples and checkpoint files written by rank 0 alone while rank 1 waits (Trainer::wait_for_writer);
#   - its checkpoint resumes on 1 rank with --grad-accum 2 without --allow-changed-config (same pairs per step),
#     and a resume with other pairs per step is refused;
#   - a rank that fails ends the whole job: exit 1 within the time limit, the message names the rank and the file;
#   - --zero 2 exits 2 naming the flag.
#   tests/train/data_parallel_cli.sh [BIN_DIR]    (registered with ctest as data_parallel_cli)
# Ends with "N passed, N failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "${1:-$ROOT}" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/stapo-dp-cli.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; [ -f "$W/$1.log" ] && tail -n 12 "$W/$1.log" | sed 's/^/    | /'; }
# OpenMPI refuses root without these (CI runs as root); two cores run four ranks only oversubscribed.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none)
command -v mpirun >/dev/null || { echo "mpirun not found (openmpi-bin: dev/deps.sh)"; echo "0 passed, 1 failed"; exit 1; }

"$B/make_synthetic_data" --out "$W/data" --pairs 40 --eval 8 --seed 7 --model-out "$W/model" --layers 1 --hidden 32 \
  --heads 2 --kv-heads 1 --ffn 64 >"$W/setup.log" 2>&1 || { fail setup "make_synthetic_data"; exit 1; }
for split in train eval; do
  "$B/prepare_data" --tokenizer "$W/model" --template chatml --in "$W/data/$split.jsonl" --out "$W/$split.bin" \
    >>"$W/setup.log" 2>&1 || { fail setup "prepare_data"; exit 1; }
done
TRAIN=("$B/train_stapo_cpu" --threads 1 --max-length 64 --model "$W/model" --data "$W/train.bin" --eval-data "$W/eval.bin"
  --loss dpo --ref precompute --lr 1e-3 --max-steps 4 --save-every 2 --eval-every 2
  --sample-prompts "$W/data/eval_prompts.jsonl" --sample-tokens 4)

# "step loss grad_norm" of every training line of a log.
steps_of() { grep '"grad_norm"' "$1" | sed -E 's/.*"step":([0-9]+).*"loss":([^,]+).*"grad_norm":([^,]+).*/\1 \2 \3/'; }

# Two ranks first: rank 0 runs the reference pass into both shards while rank 1 waits; one rank then reuses it.
two_ok=1
timeout 120 "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --batch-size 2 --out "$W/two" >"$W/two.log" 2>&1 || two_ok=0
timeout 120 "${TRAIN[@]}" --batch-size 2 --grad-accum 2 --out "$W/one" >"$W/one.log" 2>&1 || fail one_rank "exit $?"
if [ $two_ok = 1 ]; then
  if ! paste <(steps_of "$W/one/log.jsonl") <(steps_of "$W/two/log.jsonl") | awk '
      { n++; if ($1 != $4) bad = 1
        for (k = 2; k <= 3; k++) { d = $k - $(k + 3); if (d < 0) d = -d; a = $k < 0 ? -$k : $k; if (d > 1e-5 * a) bad = 1 } }
      END { exit (n != 4 || bad) }'; then
    fail two_ranks "steps differ from one rank with --grad-accum 2: $(paste <(steps_of "$W/one/log.jsonl") <(steps_of "$W/two/log.jsonl") | tr '\n' ';')"
  elif [ "$(grep -c . "$W/two/log.jsonl")" != "$(grep -c . "$W/one/log.jsonl")" ]; then
    fail two_ranks "log.jsonl has $(grep -c . "$W/two/log.jsonl") lines, one rank's $(grep -c . "$W/one/log.jsonl"): written by one rank only?"
  elif [ "$(grep -c '"samples"' "$W/two/log.jsonl")" != 3 ]; then  # rank 0's, while rank 1 waits at a barrier
    fail two_ranks "$(grep -c '"samples"' "$W/two/log.jsonl") eval sample lines in log.jsonl, not 3 (steps 0, 2, 4)"
  elif [ "$(grep -c 'reference log-probs stored' "$W/two.log")" != 2 ] || [ "$(grep -c '^done:' "$W/two.log")" != 1 ]; then
    fail two_ranks "not one reference pass per shard (by rank 0) and one 'done' line"
  elif ! grep -q '"pairs per step (--batch-size × --grad-accum × ranks)": 4' "$W/two/final/trainer_state.json"; then
    fail two_ranks "trainer_state.json does not record 4 pairs per step"
  else
    pass two_ranks
  fi
else
  fail two_ranks "mpirun -np 2 failed"
fi

# The 2-rank checkpoint continues on one rank with --grad-accum 2: the same steps 3 and 4.
if timeout 120 "${TRAIN[@]}" --batch-size 2 --grad-accum 2 --out "$W/two" --resume "$W/two/checkpoint-2" \
  >"$W/resume_one.log" 2>&1; then
  if paste <(steps_of "$W/one/log.jsonl") <(steps_of "$W/two/log.jsonl") | awk '
      { n++; d = $2 - $5; if (d < 0) d = -d; a = $2 < 0 ? -$2 : $2; if ($1 != $4 || d > 1e-5 * a) bad = 1 }
      END { exit (n != 4 || bad) }'; then
    pass resume_on_one_rank
  else
    fail resume_on_one_rank "steps 3-4 differ from the one-rank run"
  fi
else
  fail resume_on_one_rank "exit $?"
fi
timeout 60 "${TRAIN[@]}" --batch-size 2 --out "$W/two" --resume "$W/two/checkpoint-2" >"$W/resume_other.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q 'pairs per step (--batch-size × --grad-accum × ranks): 4 in the checkpoint, 2 now' \
  "$W/resume_other.log"; then
  pass resume_other_pairs_per_step_refused
else
  fail resume_other_pairs_per_step_refused "exit $rc"
fi

# Rank 1 cannot open its data: every rank stops (exit 1 within the limit), rank 0 never says done.
start=$SECONDS
timeout -s KILL 60 "${MPIRUN[@]}" -np 1 "${TRAIN[@]}" --batch-size 2 --out "$W/broken" : \
  -np 1 "$B/train_stapo_cpu" --threads 1 --max-length 64 --model "$W/model" --data "$W/missing.bin" \
  --out "$W/broken" --max-steps 4 >"$W/rank_fails.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 137 ] && grep -q "error: rank 1 of 2: .*missing.bin" "$W/rank_fails.log" &&
  ! grep -q '^done:' "$W/rank_fails.log"; then
  pass rank_failure_stops_every_rank
else
  fail rank_failure_stops_every_rank "exit $rc after $((SECONDS - start)) s (137: hung and killed)"
fi

timeout 60 "${TRAIN[@]}" --zero 2 --out "$W/zero2" >"$W/zero_flag.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q -- '--zero' "$W/zero_flag.log"; then pass zero_flag_range; else fail zero_flag_range "exit $rc"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
