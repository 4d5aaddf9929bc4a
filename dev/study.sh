#!/usr/bin/env bash
# make study: the stability study of docs/stability.md ("1. Protocol"), on the CPU, two runs at a time:
#   for each seed: data, SFT and on-policy pairs once (dev/demo.sh's preparation), then every loss at each
#   learning rate on the on-policy pairs, and the off-policy control (make_synthetic_data's pairs, whose rejected
#   answers are near misses or malformed) for SimPO and StaPO at the first learning rate;
#   then dev/study_report.sh: mean ± standard error over the seeds per run kind, loss and epoch (a table and an
#   SVG plot in $OUT, and the step-0 diagnostics of every run).
# Every setting can be overridden from the environment; the defaults are the protocol's.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out/study}
PREP_ROOT=${PREP_ROOT:-$OUT}  # where each seed's preparation is (or goes): another study's to add runs to it
SEEDS=${SEEDS:-1 2 3}
LRS=${LRS:-1e-3 3e-4}
# The protocol's losses (docs/stability.md); the bounded relatives APO-zero and BCO-pair (issue #20) were added
# after it was written and are run and reported as their own arm (dev/study.sh with LOSSES="apo_zero bco_pair").
LOSSES=${LOSSES:-simpo dpo ipo stapo stapo-saturate}
CONTROL_LOSSES=${CONTROL_LOSSES-simpo stapo}  # empty: no control runs
EPOCHS=${EPOCHS:-10}
# Two runs at a time below, so each run trains its losses one after another (demo.sh's JOBS).
export EPOCHS DEVICE=cpu SKIP_BUILD=1 JOBS=1
BUILD=${BUILD:-build}

start=$(date +%s)
say() { printf '== [%5ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

say "building"
if [ -f "$BUILD/CMakeCache.txt" ]; then cmake -S . -B "$BUILD" >/dev/null; else make -s configure BUILD="$BUILD"; fi
cmake --build "$BUILD" -j "$(nproc)" --target make_synthetic_data prepare_data train_stapo_cpu eval_synthetic \
  sample_pairs >/dev/null
mkdir -p "$OUT"

# One demo run: run NAME SEED LR PAIRS LOSSES (its console output in $OUT/NAME.log).
run() {
  local name=$1
  if PREP_ONLY=${PREP_ONLY:-} OUT="$OUT/$name" PREP="$PREP_ROOT/prep-seed$2" SEED=$2 LR=$3 PAIRS=$4 LOSSES=$5 bash dev/demo.sh \
    > "$OUT/$name.log" 2>&1; then
    say "finished $name"
  else
    say "FAILED $name (see $OUT/$name.log)"
    return 1
  fi
}

status=0
for seed in $SEEDS; do
  say "seed $seed: data, SFT, on-policy pairs"
  # The preparation alone, so that the runs below share it.
  PREP_ONLY=1 run "prep-seed$seed.run" "$seed" 0 onpolicy "" || { status=1; continue; }
  jobs=()
  for lr in $LRS; do jobs+=("onpolicy-lr$lr-seed$seed $seed $lr onpolicy"); done
  [ -n "$CONTROL_LOSSES" ] && jobs+=("control-lr${LRS%% *}-seed$seed $seed ${LRS%% *} offpolicy")
  # Two runs at a time (one thread each): the two cores of the machine the budget is stated for.
  running=0
  for job in "${jobs[@]}"; do
    read -r name s lr pairs <<< "$job"
    losses=$LOSSES
    [ "$pairs" = offpolicy ] && losses=$CONTROL_LOSSES
    say "start $name ($losses)"
    run "$name" "$s" "$lr" "$pairs" "$losses" &
    running=$((running + 1))
    if [ "$running" -ge 2 ]; then wait -n || status=1; running=$((running - 1)); fi
  done
  while [ "$running" -gt 0 ]; do wait -n || status=1; running=$((running - 1)); done
done

bash dev/study_report.sh "$OUT"
say "done: $OUT/study.md, $OUT/study.svg"
exit $status
