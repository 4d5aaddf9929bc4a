#!/usr/bin/env bash
# train_stapo --dry-run on the CPU (no device needed): the memory plan it prints for Llama-3-8B at 4 pairs × 2048
# and its refusals, as a user sees them. The plan's arithmetic is test_memory_plan's; here, by hand:
#   --master split --moments 8bit --grads bf16 --recompute 2: test_memory_plan's Llama3_8BByHand, 78,863,104,052 B
#   (the embedding's moments fp32; the kernels' workspaces there are the engine's defaults at C = 4096); with fp32
#   gradients 4 B for every parameter instead of 2 B for the 6,979,321,856 layer matmul weights: + 13,958,643,712
#   = 92,821,747,764 B.
#   - those plans print with their exact totals, and --dry-run exits 0;
#   - train_stapo's defaults (fp32 master and moments, --recompute 1) at 4 pairs under --memory-cap-gib 79.6 are
#     refused (exit 1; 184.07 GiB), naming the cheapest flags that fit (test_memory_plan's CheapestFlagsThatFit);
#   - the same with the suggested flags fits (exit 0);
#   - --fused-projections plans the same total, and is refused (exit 1, the tensor named) for a model whose tensor
#     sizes keep q, k, v or gate, up apart;
#   - --recompute auto (the default) takes the least level whose plan fits a cap (2 at 79.6 GiB with the suggested
#     flags, 0 at 300 GiB), and says that an uncapped dry run's plan is level 1's;
#   - a bad --master, --moments, --grads or --recompute exits 2 naming the flag;
#   - under mpirun's environment (OMPI_COMM_WORLD_SIZE=2; a dry run starts no collective) the plan is one GPU's of
#     two, the master weights and moments halved by ZeRO-1 (test_memory_plan's DataParallelPlanIsOneRanks), and
#     the flags data parallel does not take are refused (exit 1), each named, --cuda-graph too.
#   tests/train/dry_run_cli.sh [BIN_DIR]    (registered with ctest as dry_run_cli)
# Ends with "N passed, N failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "${1:-$ROOT}" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/stapo-dry-run.XXXXXX")
trap 'rm -rf "$W"' EXIT
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; [ -f "$W/$1.log" ] && tail -n 30 "$W/$1.log" | sed 's/^/    | /'; }

mkdir -p "$W/model"
cat >"$W/model/config.json" <<'JSON'
{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
 "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
 "bos_token_id": 128000, "eos_token_id": 128001}
JSON
# --data and --out are never opened by a dry run.
# --no-device-embedding-index: the hand-computed totals are test_memory_plan's, whose workspaces are the engine's
# without that step path's (on by default since the H200 run); default_paths below checks what it adds.
RUN=("$B/train_stapo" --dry-run --model "$W/model" --data "$W/none.bin" --out "$W/out" --max-length 2048
     --no-device-embedding-index)

for grads in bf16:78863104052 fp32:92821747764; do
  "${RUN[@]}" --batch-size 4 --master split --moments 8bit --grads "${grads%%:*}" --recompute 2 >"$W/plan.log" 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q "total .*(${grads##*:} bytes)" "$W/plan.log" \
     && grep -q "AdamW moments (8-bit m, v; embedding fp32)" "$W/plan.log" \
     && grep -q "master weights (split: low 16 bits)" "$W/plan.log" && grep -q "gradients (${grads%%:*}" "$W/plan.log"; then
    pass "plan_${grads%%:*}"
  else
    fail "plan_${grads%%:*}" "exit $rc or not the hand-computed total ${grads##*:} bytes"
  fi
done

# --fused-projections: the same arena bytes for this model (test_memory_plan's FusedProjectionsLayout), and refused
# for a model whose gate_proj (40 x 72 = 2880 elements) is not a multiple of 128 (FusedProjectionsNeedConsecutiveTensors).
"${RUN[@]}" --batch-size 4 --master split --moments 8bit --grads bf16 --recompute 2 --fused-projections \
  >"$W/fused.log" 2>&1
rc=$?
if [ $rc = 0 ] && grep -q "total .*(78863104052 bytes)" "$W/fused.log"; then
  pass fused_projections_plan
else
  fail fused_projections_plan "exit $rc or not the plan's total without the flag, 78863104052 bytes"
fi
# The default step paths add the device-built embedding index's workspace ((2N + 1) int32 and CUB's sort storage,
# bounded by 16 N + 1 MiB bytes; N = 16,384 tokens here: at most 1.38 MiB more) and nothing else; --no-device-embedding-index (above) leaves it out.
"$B/train_stapo" --dry-run --model "$W/model" --data "$W/none.bin" --out "$W/out" --max-length 2048 --batch-size 4 \
  --master split --moments 8bit --grads bf16 --recompute 2 >"$W/default_paths.log" 2>&1
rc=$?
with=$(sed -n 's/.*total .*(\([0-9]*\) bytes).*/\1/p' "$W/default_paths.log")
if [ $rc = 0 ] && grep -q "embedding index, device build" "$W/default_paths.log" \
   && ! grep -q "embedding index, device build" "$W/fused.log" && [ -n "$with" ] \
   && [ "$with" -gt 78863104052 ] && [ "$with" -le $((78863104052 + (2 * 16384 + 1) * 4 + 16 * 16384 + 1048576)) ]; then
  pass default_paths
else
  fail default_paths "exit $rc, or the device index workspace not listed, or the total $with not within its bound"
fi
mkdir -p "$W/odd"
sed 's/"hidden_size": 4096, "intermediate_size": 14336/"hidden_size": 72, "intermediate_size": 40/; s/"num_attention_heads": 32/"num_attention_heads": 8/; s/"num_key_value_heads": 8/"num_key_value_heads": 2/; s/"head_dim": 128/"head_dim": 16/' \
  "$W/model/config.json" >"$W/odd/config.json"
"$B/train_stapo" --dry-run --model "$W/odd" --data "$W/none.bin" --out "$W/out" --max-length 64 --fused-projections \
  >"$W/fused_refused.log" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "^error: --fused-projections: model.layers.0.mlp.gate_proj.weight (2880 elements" \
     "$W/fused_refused.log"; then
  pass fused_projections_refused
else
  fail fused_projections_refused "exit $rc (expected 1), or the tensor not named"
fi

"${RUN[@]}" --batch-size 4 --grad-accum 2 --memory-cap-gib 79.6 >"$W/refused.log" 2>&1
rc=$?
flags=$(sed -n 's/.*the cheapest flags that fit are \(.*\) (.*/\1/p' "$W/refused.log")
# test_memory_plan's CheapestFlagsThatFit (its comment has the arithmetic).
expected="--master split --recompute 2 --moments 8bit --grads bf16"
if [ $rc = 1 ] && grep -q "^error: the plan needs 184.07 GiB, 79.60 GiB are available" "$W/refused.log" \
   && [ "$flags" = "$expected" ]; then
  pass refused
  # shellcheck disable=SC2086  # the flags are words
  if "${RUN[@]}" --batch-size 4 --grad-accum 2 --memory-cap-gib 79.6 $flags >"$W/fits.log" 2>&1 \
     && grep -q "fits, margin" "$W/fits.log"; then
    pass suggested_flags_fit
  else
    fail suggested_flags_fit "the suggested flags ($flags) do not fit"
  fi
else
  fail refused "exit $rc (expected 1), or not 184.07 GiB needed, or the flags named are not: $expected"
fi

# --recompute auto (the default): under a cap the least level whose plan fits (the suggested flags above needed 2;
# a 300 GiB cap takes 0), and the plan printed is that level's: level 2's the hand-computed total above, level 0's
# every activation kept (levels 1 and 2 both print a row refilled in backward); without a cap, level 1's plan, said so.
for case in 79.6:2 300:0; do
  cap=${case%%:*} level=${case##*:}
  "${RUN[@]}" --batch-size 4 --grad-accum 2 --master split --moments 8bit --grads bf16 --memory-cap-gib "$cap" \
    >"$W/auto.log" 2>&1
  rc=$?
  if [ "$level" = 2 ]; then
    grep -q "total .*(78863104052 bytes)" "$W/auto.log"
  else
    grep -q "kept per layer (--recompute 0)" "$W/auto.log" && ! grep -q "refilled in backward" "$W/auto.log"
  fi
  plan_ok=$?
  if [ $rc = 0 ] && [ $plan_ok = 0 ] \
     && grep -q "^--recompute auto: $level, the least recomputation whose plan fits" "$W/auto.log"; then
    pass "recompute_auto_$cap"
  else
    fail "recompute_auto_$cap" "exit $rc, or auto did not take level $level, or the plan printed is not level $level's"
  fi
done
"${RUN[@]}" --batch-size 4 >"$W/auto_uncapped.log" 2>&1
rc=$?
if [ $rc = 0 ] && grep -q "^--recompute auto: without a device or --memory-cap-gib" "$W/auto_uncapped.log" \
   && grep -q "kept per layer (--recompute 1)" "$W/auto_uncapped.log"; then
  pass recompute_auto_uncapped
else
  fail recompute_auto_uncapped "exit $rc, or not level 1's plan with a note saying so"
fi

for bad in "--master fp16" "--moments 4bit" "--grads fp8" "--recompute 3"; do
  # shellcheck disable=SC2086
  "${RUN[@]}" --batch-size 4 $bad >"$W/bad.log" 2>&1
  rc=$?
  if [ $rc = 2 ] && grep -q -- "${bad%% *}" "$W/bad.log"; then pass "bad ${bad%% *}"; else fail "bad ${bad%% *}" "exit $rc"; fi
done
DP=(env OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0)
"${DP[@]}" "${RUN[@]}" --batch-size 1 >"$W/dp.log" 2>&1
rc=$?
if [ $rc = 0 ] && grep -q "one GPU of 2" "$W/dp.log" && grep -q "master weights (fp32) .*ZeRO-1: 1/2 of" "$W/dp.log"; then
  pass data_parallel_plan
else
  fail data_parallel_plan "exit $rc, or not one GPU's plan with the master weights halved"
fi
"${DP[@]}" "${RUN[@]}" --batch-size 1 --master split --moments 8bit --grads bf16 >"$W/dp_refused.log" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "^error: data parallel over 2 ranks takes" "$W/dp_refused.log" \
   && grep -q -- "not --master split --moments 8bit --grads bf16" "$W/dp_refused.log"; then
  pass data_parallel_refused
else
  fail data_parallel_refused "exit $rc (expected 1), or the refused flags not named"
fi
"${DP[@]}" "${RUN[@]}" --batch-size 1 --cuda-graph >"$W/dp_graph.log" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "^error: --cuda-graph and data parallel over 2 ranks" "$W/dp_graph.log"; then
  pass data_parallel_cuda_graph_refused
else
  fail data_parallel_cuda_graph_refused "exit $rc (expected 1), or --cuda-graph not named"
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
