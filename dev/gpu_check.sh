#!/usr/bin/env bash
# ONE command for all GPU verification, in parts that a 15-minute lease takes in two calls or more (docs/benchmarks.md
# says which): versions -> configure + build of every binary with GPU tests (Release, sm_90a, all cores) -> every
# `gpu`-labelled test -> the CUDA engine's tests again with their measured errors printed
# (tests/train/test_cuda_engine.cpp) -> the benchmarks (ours with the tensor-core attention, the default; PyTorch's
# amp baseline with its phases and amp under torch.compile; ours on 32-row tiles and with the atomic backward,
# without the default StepPaths switches, with every switch on and with one changed at a time, each with its
# per-phase table; --recompute 1 and the lm_head in one chunk against the default; ours with bf16 weights,
# least-memory and lean; ours on cuDNN's attention where that path is built; PyTorch's pure_bf16 baseline with its
# phases) -> ours and amp for at
# least a minute each (bench_long: the MFU claim) -> the 8B benchmark under an 80 GB cap (ours vs PyTorch's
# pure_bf16 and amp, dev/bench/gpu_step_8b.json) -> the dev/cuda playgrounds (attention versions 5 to 9 and
# cuDNN's 3 in one table) -> a short `make demo` on the GPU -> compute-sanitizer memcheck over the kernel and
# engine tests -> racecheck over the tensor-core attention tests -> a summary table, printed last. GPU_CHECK_PARTS selects parts.
# It keeps going after a failure, bounds each part with a timeout, and reports each part; stopped by a signal (an
# outer timeout), it stops the part running then too, archives (GPU_CHECK_TAR, below) and exits. A part whose tests were
# all skipped (no usable device) fails: skipped is never ok here. Results go to the folder given as $1, else
# $OUT, else ./out/gpu_check.
#
#   dev/gpu_check.sh [OUTDIR]
#
# GPU_CHECK_TAR=FILE (under the device tool: $OUT/gc.tgz) archives OUTDIR into FILE after every part and at the end:
# the tool brings back a few files, only from $OUT (also of a command it stops at its time limit), so a call cut
# short still returns every part that finished.
#
# On a machine without this project's Debian build packages (the lent GPU machines have CUDA, CMake and
# PyTorch but no GoogleTest, nlohmann-json, CLI11, PCRE2 or OpenBLAS), run `dev/device_deps.sh download`
# here first and carry the `.debs/` and `.deps/` folders: this script unpacks .debs/ into .sysroot/ and builds
# against it; .deps/ holds the cudnn-frontend headers for the cuDNN attention path.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1

out=${1:-${OUT:-./out/gpu_check}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build="build-gpu"
jobs=$(nproc)
summary=()

# run_part NAME COMMAND...: runs with its output in $out/NAME.log (tail echoed), records status and time.
run_part() {
  local name=$1
  shift
  local start=$SECONDS status
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then status=ok; else status="FAIL (exit $?)"; fi
  tail -n 15 "$out/$name.log"
  summary+=("$(printf '%-14s %-16s %5ss' "$name" "$status" $((SECONDS - start)))")
  snapshot
}

# snapshot: OUTDIR into $GPU_CHECK_TAR when it is set (written beside it, then renamed: a kill mid-archive leaves the
# previous one whole). Without an OUTDIR argument under the device tool OUTDIR is $OUT, the archive's own folder: the
# archive and its .part are left out (each snapshot held the one before and itself half-written).
snapshot() {
  [ -n "${GPU_CHECK_TAR:-}" ] || return 0
  local self
  self=$(basename "$GPU_CHECK_TAR")
  tar czf "$GPU_CHECK_TAR.part" --exclude="$self" --exclude="$self.part" -C "$(dirname "$out")" "$(basename "$out")" &&
    mv -f "$GPU_CHECK_TAR.part" "$GPU_CHECK_TAR"
}

# shellcheck source=dev/part_limit.sh
source dev/part_limit.sh  # defines: limit, stop_running_part

stop() {
  trap - TERM INT HUP
  echo "gpu_check: stopped by a signal" >&2
  stop_running_part
  snapshot
  exit 143
}
trap stop TERM INT HUP

versions() {
  nvidia-smi
  nvidia-smi -q -d CLOCK  # read only: the clocks the card runs at, named in docs/benchmarks.md
  nvcc --version
  cmake --version | head -n 1
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
}

configure_and_build() {
  local extra=() prefixes=()
  if [ -d .debs ]; then
    bash dev/device_deps.sh unpack .sysroot
    # shellcheck disable=SC1091
    source .sysroot/env.sh
    prefixes+=("$STAPO_SYSROOT/usr")
    extra+=("-DBLAS_LIBRARIES=$STAPO_SYSROOT_BLAS")
  fi
  # The cuDNN attention path (kernels/attention_cudnn.h) is built when CMake finds cuDNN and the frontend
  # headers (.deps/, carried from `dev/deps.sh --cudnn-frontend`). Where the toolkit has no cuDNN, PyTorch's
  # wheel of it (nvidia/cudnn: include/ and lib/) serves.
  local torch_cudnn
  torch_cudnn=$(python3 -c "import nvidia.cudnn as m; print(m.__path__[0])" 2>/dev/null) &&
    [ ! -f /usr/local/cuda/include/cudnn.h ] && prefixes+=("$torch_cudnn")
  if [ "${#prefixes[@]}" -gt 0 ]; then
    extra+=("-DCMAKE_PREFIX_PATH=$(IFS=';'; echo "${prefixes[*]}")")
  fi
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAPO_CUDA=ON -DSTAPO_CUDA_ARCHS=90a "${extra[@]}" &&
    cmake --build "$build" -j "$jobs" --target stapo_gpu_tests train_stapo gpu_step -- -k
  if cudnn_built; then echo "cuDNN attention path: built"; else echo "cuDNN attention path: not built"; fi
}

# A gpu test skips only when it finds no usable device, and a few in each binary are host-only checks that
# pass anyway: so here any skipped test fails the part (all of them skipped is the no-device case the summary
# once reported as "ok").
# ctest_ran LOG: fails, saying so, when the ctest run in LOG skipped a test or ran none.
ctest_ran() {
  local total skipped
  total=$(grep -oE "tests failed out of [0-9]+" "$1" | tail -n 1 | grep -oE "[0-9]+$")
  skipped=$(grep -c "(Skipped)" "$1")
  if [ -z "$total" ] || [ "$total" -eq 0 ] || [ "$skipped" -gt 0 ]; then
    echo "FAIL: ${skipped} of ${total:-0} tests skipped (no usable GPU?): skipped is not passed"
    return 4
  fi
}

# gtest_ran LOG: the same for a GoogleTest binary's own output.
gtest_ran() {
  local total skipped
  total=$(grep -oE "^\[==========\] [0-9]+ tests? from .* ran" "$1" | grep -oE "[0-9]+" | head -n 1)
  skipped=$(grep -oE "^\[  SKIPPED \] [0-9]+ test" "$1" | grep -oE "[0-9]+" | head -n 1)
  if [ -z "$total" ] || [ "$total" -eq 0 ] || [ "${skipped:-0}" -gt 0 ]; then
    echo "FAIL: ${skipped:-0} of ${total:-0} tests skipped (no usable GPU?): skipped is not passed"
    return 4
  fi
}

gpu_tests() {
  local log="$out/gpu_tests.ctest.log" status=0
  (cd "$build" && ctest -L gpu --timeout 180 --output-on-failure --output-junit "$out/gpu_tests.xml" -j 1) \
    >"$log" 2>&1 || status=$?
  cat "$log"
  ctest_ran "$log" || return $?
  return $status
}

# The CUDA engine against the CPU reference (what --device-check printed before engine v2): the gtest binary
# itself, so that the measured errors of every case are in the log.
engine_tests() {
  local log="$out/engine_tests.gtest.log" status=0
  limit 300 "$build/tests/train/test_cuda_engine" >"$log" 2>&1 || status=$?
  cat "$log"
  gtest_ran "$log" || return $?
  return $status
}

# bench_ours NAME [gpu_step flags]: writes $out/bench_NAME.json.
bench_ours() {
  local name=$1
  shift
  if [ -x "$build/dev/bench/gpu_step" ]; then
    limit 150 "$build/dev/bench/gpu_step" --config dev/bench/gpu_step_config.json --out "$out/bench_$name.json" "$@"
  else
    echo "dev/bench/gpu_step is not built in this version"
    return 3
  fi
}

cudnn_built() {
  grep -q "^STAPO_CUDNN_FRONTEND_INCLUDE_DIR:PATH=/" "$build/CMakeCache.txt" 2>/dev/null &&
    grep -q "^STAPO_CUDNN_LIB:FILEPATH=/" "$build/CMakeCache.txt"
}

# The README's `make demo` on the GPU, shortened (fewer prompts and epochs): dev/demo.sh's GPU route end to end. The
# SFT must still learn the task well enough that sampled replies give pairs (a held-out split without one stops the
# demo): 2 SFT epochs on 300 prompts left 0.2% of replies correct and no held-out pair; 20 epochs, 31.5% and 10 of 60
# held-out prompts (the CPU trainer on the GPU route's model, as a stand-in).
demo_gpu() {
  rm -rf /tmp/stapo-demo-gpu
  DEVICE=gpu BUILD="$build" TRAIN_PROMPTS=300 EVAL=60 SFT_EPOCHS=20 EPOCHS=1 OUT=/tmp/stapo-demo-gpu \
    limit 300 bash dev/demo.sh && cp /tmp/stapo-demo-gpu/summary.md "$out/demo_summary.md"
}

# make -C dev/cuda's flags for the sysroot's OpenBLAS, one per line (none without a sysroot).
playground_blas_flags() {
  if [ -n "${STAPO_SYSROOT:-}" ]; then
    printf '%s\n' "BLAS_CFLAGS=-I$STAPO_SYSROOT/usr/include/x86_64-linux-gnu/openblas-pthread" \
      "BLAS_LIBS=$STAPO_SYSROOT_BLAS"
  fi
}

# The dev/cuda playgrounds: each checks its kernel against the CPU twin, then times it (per-kernel numbers).
# The attention playground is built once, with cuDNN's SDPA (version 3, the yardstick) where the build has it, and
# times mma.sync (5, kernels/attention_flash2.cu, the default), mma.sync with the atomic backward (6, `--attention
# flash2-atomic`), the experiments 7 to 9 and cuDNN in one table. The SIMT version 2 (`--attention flash`) and the
# WMMA version 4 were measured on two H200 leases (docs/kernels.md) and are left out to fit the timeout:
# `./attention 2 4` times them.
playgrounds() {
  local blas=() attention_flags=() versions="5 6 7 8 9"
  mapfile -t blas < <(playground_blas_flags)
  if cudnn_built; then
    local lib include
    lib=$(dirname "$(grep "^STAPO_CUDNN_LIB:FILEPATH=" "$build/CMakeCache.txt" | cut -d= -f2)")
    include=$(grep "^STAPO_CUDNN_INCLUDE_DIR:PATH=" "$build/CMakeCache.txt" | cut -d= -f2)
    attention_flags=(CUDNN=1 "CUDNN_DIRS=-I$include -L$lib -Xlinker -rpath=$lib")
    versions="3 5 6 7 8 9"
  fi
  rm -f dev/cuda/attention  # the binary does not depend on CUDNN: rebuild it with this call's choice
  make -C dev/cuda -j "$jobs" "${blas[@]}" "${attention_flags[@]}" || return 1
  local failed=0 playground
  echo "-- attention $versions"
  # shellcheck disable=SC2086
  limit 300 dev/cuda/attention $versions || failed=1
  for playground in embedding lm_head rmsnorm rope swiglu adamw; do
    echo "-- $playground"
    limit 60 "dev/cuda/$playground" || failed=1
  done
  return $failed
}

# Only the attention (not a default part: gpu_tests and playgrounds cover it): its GPU tests on both
# implementations and the atomic backward, then the playground's versions 5 to 9. For a short first call on the
# tensor-core kernels: GPU_CHECK_PARTS="attention racecheck".
attention() {
  local log="$out/attention.gtest.log" status=0 blas=()
  limit 120 "$build/tests/kernels/test_kernels" --gtest_filter='*Attention*' >"$log" 2>&1 || status=$?
  cat "$log"
  gtest_ran "$log" || status=4
  mapfile -t blas < <(playground_blas_flags)
  make -C dev/cuda attention "${blas[@]}" && limit 240 dev/cuda/attention 5 6 7 8 9 || status=1
  return $status
}

# Out-of-bounds and misaligned accesses (slow: memcheck runs each kernel many times slower): every kernel test but
# the 2^31-element AdamW tensor's, and the engine tests whose cases run every attention path, step path and
# recompute level (one step each) and the CUDA graphs.
sanitizer() {
  local status=0 binary log
  local -A filter=([tests/kernels/test_kernels]='-KernelAdamWCompact.TensorBeyond2To31Elements'
                   [tests/train/test_cuda_engine]='CudaEngine.OneStepMatchesCpuReference:CudaEngine.CudaGraph*:CudaEngine.MemoryPlanBoundsWhatIsAllocated')
  for binary in tests/kernels/test_kernels tests/train/test_cuda_engine; do
    log="$out/sanitizer.$(basename "$binary").log"
    limit 240 compute-sanitizer --tool memcheck --error-exitcode 1 "$build/$binary" \
      --gtest_filter="${filter[$binary]}" >"$log" 2>&1 || status=1
    grep -E "ERROR SUMMARY|tests? from .* ran|PASSED|FAILED|SKIPPED" "$log"
    gtest_ran "$log" || status=1
  done
  return $status
}

# Shared-memory races in the tensor-core attention (its cp.async double buffering): the flash2 cases of
# test_kernels under racecheck.
racecheck() {
  local log="$out/racecheck.test_kernels.log" status=0
  limit 240 compute-sanitizer --tool racecheck --error-exitcode 1 "$build/tests/kernels/test_kernels" \
    --gtest_filter='*KernelAttention*flash2*' >"$log" 2>&1 || status=1
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|tests? from .* ran|PASSED|FAILED|SKIPPED" "$log"
  gtest_ran "$log" || status=1
  return $status
}

# Hardware counters of the attention kernels inside the 1B step (Nsight Compute; not a default part): ours (the
# tensor-core forward, dK/dV and dQ kernels) and PyTorch's FlashAttention-2 (amp), one launch of each kernel
# from the last layer of the first step (skipping the first 15 forward launches: every layer's shapes are the
# same), sections for speed of light, occupancy, launch, warp stalls, scheduler, compute and memory (shared-memory
# bank conflicts in its tables). The measured basis for the next attention change: the playground gives rates, this
# gives why. Text reports in $out/profile_*.txt. --clock-control none: the card's clocks are left alone.
profile() {
  command -v ncu >/dev/null || { echo "ncu (Nsight Compute) is not on the PATH"; return 3; }
  [ -x "$build/dev/bench/gpu_step" ] || { echo "dev/bench/gpu_step is not built"; return 3; }
  local status=0 sections=()
  for section in SpeedOfLight Occupancy LaunchStats WarpStateStats SchedulerStats ComputeWorkloadAnalysis \
    MemoryWorkloadAnalysis MemoryWorkloadAnalysis_Tables; do
    sections+=(--section "$section")
  done
  local ncu=(ncu --clock-control none --launch-skip 15 --launch-count 3 "${sections[@]}")
  limit 240 "${ncu[@]}" -k regex:'flash2_(forward|dkv|dq)_kernel' "$build/dev/bench/gpu_step" \
    --config dev/bench/gpu_step_config.json >"$out/profile_ours.txt" 2>&1 || status=1
  # amp forces FlashAttention (pure_bf16's SDPA may pick another backend: the first profile, on pure_bf16 with only
  # flash_fwd|flash_bwd in the pattern, matched no kernel).
  PYTHONUNBUFFERED=1 limit 240 "${ncu[@]}" -k regex:'flash_(fwd|bwd)|fmha|sdpa' python3 dev/bench/torch_baseline.py \
    --config dev/bench/gpu_step_config.json --baseline amp --out "$out/profile_torch.json" \
    >"$out/profile_torch.txt" 2>&1 || status=1
  local report
  for report in "$out/profile_ours.txt" "$out/profile_torch.txt"; do
    echo "-- $(basename "$report")"
    grep -E "^  [a-z_].*(kernel|Kernel)|Duration|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Throughput|Memory Throughput|Shared Memory Configuration Size|Dynamic Shared Memory Per Block|Block Limit|Issue Slots Busy|No Eligible|Bank Conflicts|==ERROR==|==WARNING==" \
      "$report" | head -n 80
  done
  return $status
}

# bench_torch NAME BASELINE [flags]: writes $out/bench_torch_NAME.json.
bench_torch() {
  local name=$1 baseline=$2
  shift 2
  PYTHONUNBUFFERED=1 limit 240 python3 dev/bench/torch_baseline.py --config dev/bench/gpu_step_config.json \
    --baseline "$baseline" --out "$out/bench_torch_$name.json" "$@"
}

# The 8B on one 80 GB card (dev/bench/gpu_step_8b.json, issue #17): gpu_step behaves as on a card of the config's
# memory_cap_gib (79.6) whatever this card has, refuses a plan above it, and fails when an allocation passes it.
# The part also fails when the measured peak exceeds the cap. PyTorch's pure_bf16 and amp baselines at the same
# config (capped the same way) are expected to run out of memory: their JSON then records where and what they held.
bench_8b() {
  [ -x "$build/dev/bench/gpu_step" ] || { echo "dev/bench/gpu_step is not built"; return 3; }
  limit 420 "$build/dev/bench/gpu_step" --config dev/bench/gpu_step_8b.json --out "$out/bench_8b.json" || return $?
  python3 - "$out/bench_8b.json" dev/bench/gpu_step_8b.json <<'PY'
import json, sys
r, cap = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["memory_cap_gib"]
print(f"8B: peak {r['peak_memory_gib']:.2f} GiB (planned {r['planned_memory_gib']:.2f}, cap {cap}), "
      f"step {r['median_step_s']:.2f} s, {r['tokens_per_s']:.0f} tok/s, MFU {100 * (r['mfu'] or 0):.1f}%")
sys.exit(0 if r["peak_memory_gib"] <= cap else 1)
PY
}

# bench_torch_8b BASELINE: writes $out/bench_torch_8b_BASELINE.json.
bench_torch_8b() {
  PYTHONUNBUFFERED=1 limit 300 python3 dev/bench/torch_baseline.py --config dev/bench/gpu_step_8b.json \
    --baseline "$1" --out "$out/bench_torch_8b_$1.json"
}

# GPU_CHECK_PARTS picks parts for a second, shorter call (e.g. "gpu_tests playgrounds"); the build always runs.
parts=" ${GPU_CHECK_PARTS:-versions gpu_tests engine_tests bench bench_long bench_8b playgrounds demo_gpu sanitizer racecheck} "
want() { [[ $parts == *" $1 "* ]]; }

want versions && run_part versions versions
run_part build configure_and_build
# Later parts need the environment the build part set up (sysroot libraries).
if [ -f .sysroot/env.sh ]; then
  # shellcheck disable=SC1091
  source .sysroot/env.sh
fi
want gpu_tests && run_part gpu_tests gpu_tests
want engine_tests && run_part engine_tests engine_tests
if want bench; then
  # Rows in the order a call cut short should keep them (GPU_CHECK_TAR saves each): our default, the two baselines of
  # issue #15's ratios, the 32-row tiles, then the rest.
  run_part bench_ours bench_ours ours --phases 3  # the default: tensor-core attention (flash2)
  run_part bench_torch_amp bench_torch amp amp --phases
  run_part bench_compile bench_torch amp_compile amp_compile
  # (The SIMT attention, --attention flash, ran in both H200 leases, 1.6x slower per step: left out to fit a lease.)
  # The same kernels on 32-row tiles (more blocks per SM; the playground's version 8): against "ours".
  run_part bench_narrow bench_ours ours_narrow --attention flash2-narrow --phases 3
  # The tensor-core attention with FlashAttention-2's atomic backward (H200, 2026-11-29: 137.5 against 136.7 ms, no
  # gain): against "ours".
  run_part bench_atomic bench_ours ours_atomic --attention flash2-atomic --phases 3
  # The default runs four StepPaths switches (train/cuda_model.h); the baseline code without them, and every path on
  # (the two that stay off by default too): each against "ours".
  run_part bench_baseline bench_ours ours_baseline --no-grad-first-write --no-rmsnorm-warp \
    --no-device-embedding-index --no-adamw-multi-tensor --phases 3
  run_part bench_paths bench_ours ours_paths --matmul-autotune --fused-projections --phases 3
  # And one switch at a time (a few seconds each): the default without each of its four, with each of the others.
  for step_path in no-grad-first-write no-rmsnorm-warp no-device-embedding-index no-adamw-multi-tensor \
    matmul-autotune fused-projections; do
    run_part "bench_$step_path" bench_ours "ours_${step_path//-/_}" "--$step_path" --phases 3
  done
  # The default's --recompute auto takes 0 where the plan fits (3 GiB more at this shape): level 1, the default
  # before it, against "ours".
  run_part bench_recompute-1 bench_ours ours_recompute_1 --recompute 1 --phases 3
  # The lm_head in one chunk of the config's 4096 response rows instead of two of 2048: fp32 dW read and written
  # once instead of twice per vocabulary chunk (1 GB each time here), for 208 MB more workspace.
  run_part bench_lm-head-rows bench_ours ours_lm_head_rows --lm-head-chunk-rows 4096 --phases 3
  # CUDA graphs of the step: without --phases (its events are not replayed, so the engine refuses the pair; for the
  # same reason not in bench_paths); the default already runs the two paths it implies.
  run_part bench_cuda-graph bench_ours ours_cuda_graph --cuda-graph
  # bf16 weights with stochastic rounding: the like-for-like of PyTorch's pure_bf16 baseline.
  run_part bench_bf16 bench_ours ours_bf16 --bf16-params
  # The least-memory configuration: bf16 weights with stochastic rounding, every layer recomputed.
  run_part bench_lowmem bench_ours ours_lowmem --bf16-params --recompute 2
  # The lean candidate for issue #15's memory goal (<= 0.3x the amp baseline's peak): 8-bit moments too (planned
  # 12.67 GiB for this config by train_stapo --dry-run, the embedding's moments fp32).
  run_part bench_lean bench_ours ours_lean --bf16-params --recompute 2 --moments 8bit --phases 3
  if cudnn_built; then run_part bench_cudnn bench_ours ours_cudnn --attention cudnn; fi
  run_part bench_torch bench_torch pure_bf16 pure_bf16 --phases
fi
# The issue's MFU claim needs a run of at least a minute: our default and PyTorch's like-for-like baseline (2).
if want bench_long; then
  run_part bench_long bench_ours ours_long --min-seconds 60
  run_part bench_torch_long bench_torch amp_long amp --min-seconds 60
fi
if want bench_8b; then
  run_part bench_8b bench_8b
  run_part bench_torch_8b_pure_bf16 bench_torch_8b pure_bf16
  run_part bench_torch_8b_amp bench_torch_8b amp
fi
want attention && run_part attention attention
want playgrounds && run_part playgrounds playgrounds
want demo_gpu && run_part demo_gpu demo_gpu
want sanitizer && run_part sanitizer sanitizer
want racecheck && run_part racecheck racecheck
want profile && run_part profile profile

echo
echo "== test results (ctest -L gpu; the engine tests' measured errors in engine_tests.log)"
[ -f "$out/gpu_tests.log" ] && grep -E "tests passed|tests failed|Skipped|\*\*\*Failed|FAIL:" "$out/gpu_tests.log" | tail -n 20
[ -f "$out/engine_tests.log" ] && grep -E "dS/token|copies of one batch|rounded away|PASSED|FAILED|FAIL:" "$out/engine_tests.log"
echo
echo "== benchmark (dev/bench/gpu_step_config.json)"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
IMPLS = ("ours", "ours_atomic", "ours_narrow", "ours_baseline", "ours_paths", "ours_bf16", "ours_lowmem", "ours_lean",
         "ours_cudnn",
         "torch_pure_bf16", "torch_amp", "torch_amp_compile", "ours_long", "torch_amp_long")
SWITCHES = tuple("ours_" + s for s in ("no_grad_first_write", "no_rmsnorm_warp", "no_device_embedding_index",
                                        "no_adamw_multi_tensor", "matmul_autotune", "fused_projections",
                                        "cuda_graph", "recompute_1", "lm_head_rows"))
rows = []


def load(impl):
    """A row's result dict; None when it is missing, or unreadable (a run cut off mid-write: said, not fatal)."""
    path = os.path.join(out, f"bench_{impl}.json")
    if not os.path.exists(path):
        return None
    try:
        r = json.load(open(path))
    except ValueError as e:
        rows.append(f"{impl:17s} unreadable {path}: {e}")
        return None
    if not isinstance(r, dict):
        rows.append(f"{impl:17s} unreadable {path}: not a JSON object")
        return None
    return r


results = {impl: r for impl in IMPLS + SWITCHES + ("8b", "torch_8b_pure_bf16", "torch_8b_amp")
           if (r := load(impl)) is not None}
for impl in IMPLS:
    r = results.get(impl)
    if r:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "?"
        # The count before engine v2 (the lm_head on every token), for comparison with earlier runs.
        mfu_all = f"{100 * r['mfu_all_tokens']:.1f}%" if r.get("mfu_all_tokens") else "?"
        mem = f"{r['peak_memory_gib']:.1f} GiB" if r.get("peak_memory_gib") else "?"
        rows.append(f"{impl:17s} {r['median_step_s'] * 1000:9.1f} ms {r['tokens_per_s']:10.0f} tok/s  MFU {mfu:>6s} "
                    f"(all-token count {mfu_all:>6s})  peak {mem}")
    else:
        rows.append(f"{impl:17s} (no result)")
torch_r = results.get("torch_amp") or results.get("torch_pure_bf16")
ours_r = results.get("ours")
if ours_r and torch_r and abs(ours_r["model_tflops_per_step"] / torch_r["model_tflops_per_step"] - 1) > 1e-9:
    rows.append(f"MISMATCH: model TFLOP per step, ours {ours_r['model_tflops_per_step']} vs torch "
                f"{torch_r['model_tflops_per_step']} (train/model_flops.h and torch_baseline.py must agree)")
# The issue's comparisons: our default against (2) amp and (3) amp_compile, --bf16-params against (1) pure_bf16.
for impl, base, goal in (("ours", "torch_amp", 1.5), ("ours", "torch_amp_compile", 1.2), ("ours_long", "torch_amp_long", 1.5),
                         ("ours_paths", "torch_amp", 1.5), ("ours_cudnn", "torch_amp", 1.5),
                         ("ours_atomic", "ours", None), ("ours_narrow", "ours", None),
                         ("ours_bf16", "torch_pure_bf16", None),
                         ("ours_lowmem", "torch_pure_bf16", None),
                         ("ours_lowmem", "torch_amp", None), ("ours_lean", "torch_amp", None),
                         ("ours_paths", "ours", None), ("ours_baseline", "ours", None)) + tuple(
                             (switch, "ours", None) for switch in SWITCHES):
    r, b = results.get(impl), results.get(base)
    if r and b and b.get("peak_memory_gib") and r.get("peak_memory_gib"):
        rows.append(f"{impl} / {base}: tokens/s x{r['tokens_per_s'] / b['tokens_per_s']:.2f}"
                    + (f" (goal >= {goal})" if goal else "")
                    + f", peak memory x{r['peak_memory_gib'] / b['peak_memory_gib']:.2f}")
for impl in ("8b", "torch_8b_pure_bf16", "torch_8b_amp"):  # dev/bench/gpu_step_8b.json
    r = results.get(impl)
    if not r:
        rows.append(f"{impl:18s} (no result)")
        continue
    if r.get("oom"):
        rows.append(f"{impl:18s} out of memory during {r.get('oom_during')} (held "
                    f"{r.get('allocated_gib_at_oom', 0):.1f} GiB)")
        continue
    planned = f" (planned {r['planned_memory_gib']:.2f} GiB)" if r.get("planned_memory_gib") else ""
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "?"
    rows.append(f"{impl:18s} {r['median_step_s'] * 1000:9.1f} ms {r['tokens_per_s']:10.0f} tok/s  MFU {mfu:>6s} (goal "
                f">= 40%)  peak {r['peak_memory_gib']:.2f} GiB{planned}")
# Per-phase tables side by side (ms per step): ours from CUDA events, PyTorch's from torch.profiler.
with_phases = [impl for impl in IMPLS if "phases_ms" in results.get(impl, {})]
if with_phases:
    rows.append("")
    rows.append("| phase | " + " | ".join(with_phases) + " |")
    rows.append("|---|" + "---:|" * len(with_phases))
    names = list(dict.fromkeys(n for impl in with_phases for n in results[impl]["phases_ms"]))
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{results[impl]['phases_ms'].get(name, 0):.2f}" for impl in with_phases)
                    + " |")
print("\n".join(rows))
PY
echo
echo "== summary ($out)"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
snapshot
