#!/usr/bin/env bash
# The training curves of one or more runs, overlaid, as one SVG (the demo's panels, dev/svg_plot.awk):
#   dev/plot_runs.sh OUT.svg RUN_DIR [RUN_DIR...]
# Reads RUN_DIR/log.jsonl of each run (train_stapo_cpu / train_stapo: one line per step, one "eval/..." line per
# evaluation; sample lines are skipped) and draws one panel per key of $PLOT_KEYS that any run logged, over the
# step, one curve per run. Keys no run logged are left out (runs without --eval-data lack the eval/ keys,
# among them the Δ quantiles, which only evaluations compute). Plain bash + POSIX awk, no Python.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: dev/plot_runs.sh OUT.svg RUN_DIR [RUN_DIR...]   (keys: \$PLOT_KEYS, see docs/training.md)" >&2
  exit 2
fi
out=$1
shift
keys=${PLOT_KEYS:-"loss eval/loss rewards/accuracies eval/rewards/accuracies z/mean z/max eval/z/mean \
eval/delta/p05 eval/delta/p25 eval/delta/p50 eval/delta/p75 eval/delta/p95 entropy/chosen entropy/rejected eval/entropy/chosen \
logps/chosen logps/rejected eval/logps/chosen nll/chosen lr grad_norm"}
logs=()
for run in "$@"; do
  [ -f "$run/log.jsonl" ] || { echo "error: $run/log.jsonl not found (is $run a training run's --out directory?)" >&2; exit 1; }
  logs+=("$run/log.jsonl")
done
table=$(mktemp)
trap 'rm -f "$table"' EXIT

# log lines → a table of (run, step, one column per key found); a log line is a flat JSON object of numbers.
awk -v keys="$keys" '
  BEGIN { nkey = split(keys, key, " ") }
  FNR == 1 { run = FILENAME; sub(/\/log\.jsonl$/, "", run); runs[++nrun] = run }
  /"samples":/ { next }
  {
    line = $0; gsub(/[{}"]/, "", line)
    n = split(line, field, ",")
    delete got
    for (i = 1; i <= n; i++) {
      colon = index(field[i], ":")
      if (colon) got[substr(field[i], 1, colon - 1)] = substr(field[i], colon + 1)
    }
    if (!("step" in got)) next
    step = got["step"] + 0
    if (!((run, step) in row_seen)) { row_seen[run, step] = 1; rows[run, ++nrows[run]] = step }
    for (k = 1; k <= nkey; k++)
      if ((key[k] in got) && got[key[k]] != "null") { value[run, step, k] = got[key[k]]; present[k] = 1 }
  }
  END {
    for (r = 1; r <= nrun; r++) {  # runs are named by their folder alone when those names are unique
      base = runs[r]; sub(/\/+$/, "", base); sub(/.*\//, "", base)
      label[r] = base; if (base in used) unique = "no"; used[base] = 1
    }
    if (unique == "no") for (r = 1; r <= nrun; r++) label[r] = runs[r]
    printf "run\tstep"
    for (k = 1; k <= nkey; k++) if (k in present) printf "\t%s", key[k]
    printf "\n"
    for (r = 1; r <= nrun; r++)
      for (i = 1; i <= nrows[runs[r]]; i++) {
        step = rows[runs[r], i]
        printf "%s\t%d", label[r], step
        for (k = 1; k <= nkey; k++)
          if (k in present) printf "\t%s", ((runs[r], step, k) in value ? value[runs[r], step, k] : "nan")
        printf "\n"
      }
  }
' "${logs[@]}" > "$table"

if [ "$(head -1 "$table")" = "$(printf 'run\tstep')" ]; then
  echo "error: none of the keys ($keys) is in ${logs[*]}" >&2
  exit 1
fi
awk -F'\t' -v first=3 -v xlabel=step -v generator=dev/plot_runs.sh -v source="$*" \
  -f "$(dirname "$0")/svg_plot.awk" "$table" > "$out"
echo "wrote $out ($(head -1 "$table" | awk -F'\t' '{ print NF - 2 }') panels, $# runs)" >&2
