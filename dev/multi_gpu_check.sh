#!/usr/bin/env bash
# ONE command for the multi-GPU checks of data parallel (docs/distributed.md), sized for one call of under 12
# minutes on a node with 2-8 GPUs (NVLink or PCIe), launched by mpirun:
#   versions -> build (GPU targets + MPI) -> the NCCL backend's and the CUDA engine's GPU tests at W = 1 (the
#   engine over NCCL equals the engine without it, bit for bit, train/cuda_zero.h) -> the CPU engine's data-parallel
#   tests (mpirun -np 1/2/4) -> reduce-scatter (fp32) and all-gather (bf16) bus bandwidth at W = 2, 4, 8 ->
#   train_stapo at W = 1, 2, 4, 8 against grad_accum W on one GPU, with the gradients reduced after the backward
#   (--zero-overlap 0) and bucket by bucket during it (--zero-overlap 1), ZeRO-1 on and off, a checkpoint saved at 8
#   and resumed at 4 -> tokens/s at fixed pairs per GPU for W = 1, 2, 4, 8, and at the largest W with
#   --zero-overlap 1 -> a summary table, printed last.
# Results go to the folder given as $1, else $OUT, else ./out/multi_gpu_check. Each part is bounded by a timeout
# and reported; the script keeps going after a failure.
#
#   dev/multi_gpu_check.sh [OUTDIR]
#
# Status: written without a multi-GPU machine; it has NOT run yet, and neither has train_stapo with more than one
# rank (train/cuda_zero.h: NCCL, ZeRO-1, the overlapped reduction), which its training parts are the first test of.
# Machines without the Debian build packages: run `dev/device_deps.sh download` where a registry is reachable,
# carry .debs/ and .deps/; this script unpacks them (OpenMPI included) into .sysroot/ as dev/gpu_check.sh does.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1

out=${1:-${OUT:-./out/multi_gpu_check}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build="build-gpu"
summary=()
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # lent machines run as root
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
mpirun_bin=mpirun

# shellcheck source=dev/part_limit.sh
source dev/part_limit.sh  # defines: limit, stop_running_part
trap 'trap - TERM INT HUP; echo "multi_gpu_check: stopped by a signal" >&2; stop_running_part; exit 143' TERM INT HUP

# run_part NAME SECONDS FUNCTION: output in $out/NAME.log (tail echoed), status and time recorded. The function runs in
# a child bash under `limit` (timeout runs programs, not shell functions), which is given this script's functions
# and the variables they read.
run_part() {
  local name=$1 seconds=$2 start=$SECONDS status
  shift 2
  echo "== $name: $*"
  if limit "$seconds" bash -c "$(declare -f); $(declare -p build out gpus mpirun_bin W TRAIN); \"\$@\"" "$name" "$@" \
    >"$out/$name.log" 2>&1; then status=ok; else status="FAIL (exit $?)"; fi
  tail -n 12 "$out/$name.log"
  summary+=("$(printf '%-18s %-16s %5ss' "$name" "$status" $((SECONDS - start)))")
}

# The world sizes this node can run: 1 and the powers of two up to its GPU count, at most 8.
sizes() { local w; for w in 1 2 4 8; do [ "$w" -le "$gpus" ] && echo "$w"; done; }
mpi() { local np=$1; shift; "$mpirun_bin" -np "$np" --bind-to none -x OMP_NUM_THREADS=4 "$@"; }

versions() {
  nvidia-smi
  nvidia-smi topo -m
  nvcc --version | tail -n 1
  "$mpirun_bin" --version | head -n 1
  echo "GPUs: $gpus"
  [ "$gpus" -ge 2 ] || { echo "this node has fewer than 2 GPUs: the multi-GPU parts cannot run"; return 1; }
}

configure_and_build() {
  local extra=()
  if [ -d .debs ]; then
    bash dev/device_deps.sh unpack .sysroot
    # shellcheck disable=SC1091
    source .sysroot/env.sh
    extra+=("-DCMAKE_PREFIX_PATH=$STAPO_SYSROOT/usr" "-DBLAS_LIBRARIES=$STAPO_SYSROOT_BLAS"
      "-DMPI_CXX_COMPILER=$STAPO_MPI_CXX" "-DMPIEXEC_EXECUTABLE=$STAPO_MPIRUN")
  fi
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAPO_CUDA=ON -DSTAPO_CUDA_ARCHS="${STAPO_CUDA_ARCHS:-90a}" \
    "${extra[@]}" &&
    cmake --build "$build" -j "$(nproc)" --target train_stapo train_stapo_cpu make_synthetic_data prepare_data \
      collective_bw test_collective_nccl test_cuda_engine test_data_parallel
}

nccl_w1() {
  (cd "$build" && ctest -R 'CollectiveNccl|NcclOneRankEqualsOneProcess|data_parallel_np' --output-on-failure \
    --timeout 120)
}

busbw() {
  local w
  for w in $(sizes); do
    [ "$w" -ge 2 ] || continue
    mpi "$w" "$build/dev/bench/collective_bw" --elements $((1 << 28)) --iters 10 || return 1
  done
}

# A small Llama and synthetic pairs for the training parts (random weights: the check is equality, not learning).
W=$out/work
setup_data() {
  rm -rf "$W" && mkdir -p "$W"
  ./make_synthetic_data --out "$W/data" --pairs 512 --eval 32 --seed 7 --model-out "$W/model" --layers 4 \
    --hidden 512 --heads 8 --kv-heads 4 --ffn 1536 &&
    ./prepare_data --tokenizer "$W/model" --template chatml --in "$W/data/train.jsonl" --out "$W/train.bin"
}
TRAIN=(./train_stapo --model "$W/model" --data "$W/train.bin" --max-length 128 --lr 1e-4 --seed 3 --step0-pairs 0)
steps_of() { grep '"grad_norm"' "$1" | sed -E 's/.*"step":([0-9]+).*"loss":([^,]+).*"grad_norm":([^,]+).*/\1 \2 \3/'; }
# same_steps A B TOL: every step's loss and grad_norm of two logs agree to TOL relative (bf16 weights: not exact).
same_steps() {
  paste <(steps_of "$1") <(steps_of "$2") | awk -v tol="$3" '
    { n++; for (k = 2; k <= 3; k++) { d = $k - $(k + 3); if (d < 0) d = -d; a = $k < 0 ? -$k : $k
      if ($1 != $4 || d > tol * a) { print "step " $1 ": " $k " vs " $(k + 3); bad = 1 } } }
    END { exit (n == 0 || bad) }'
}

# W ranks with --batch-size 2 vs one GPU with --grad-accum W (and --grad-accum 8/W against 8 on one GPU), the
# gradients reduced after the backward and (--zero-overlap 1) during it; ZeRO-1 off at the largest W, both ways;
# saved at 8 (or the largest W), resumed at half of it.
train_equivalence() {
  setup_data || return 1
  local w top=1 bad=0
  "${TRAIN[@]}" --batch-size 2 --grad-accum 8 --max-steps 6 --save-every 3 --out "$W/w1" || return 1
  for w in $(sizes); do
    top=$w
    [ "$w" -ge 2 ] || continue
    mpi "$w" "${TRAIN[@]}" --batch-size 2 --grad-accum $((8 / w)) --max-steps 6 --save-every 3 --out "$W/w$w" || return 1
    same_steps "$W/w1/log.jsonl" "$W/w$w/log.jsonl" 2e-2 && echo "W=$w = grad_accum $w·$((8 / w)) on one GPU" || bad=1
    mpi "$w" "${TRAIN[@]}" --batch-size 2 --grad-accum $((8 / w)) --max-steps 6 --zero-overlap 1 \
      --out "$W/w${w}overlap" || return 1
    same_steps "$W/w1/log.jsonl" "$W/w${w}overlap/log.jsonl" 2e-2 &&
      echo "W=$w, --zero-overlap 1 = grad_accum $w·$((8 / w)) on one GPU" || bad=1
  done
  mpi "$top" "${TRAIN[@]}" --batch-size 2 --grad-accum $((8 / top)) --max-steps 6 --zero 0 --out "$W/zero0" || return 1
  same_steps "$W/w$top/log.jsonl" "$W/zero0/log.jsonl" 2e-2 && echo "ZeRO-1 = unsharded at W=$top" || bad=1
  mpi "$top" "${TRAIN[@]}" --batch-size 2 --grad-accum $((8 / top)) --max-steps 6 --zero 0 --zero-overlap 1 \
    --out "$W/zero0overlap" || return 1
  same_steps "$W/w$top/log.jsonl" "$W/zero0overlap/log.jsonl" 2e-2 &&
    echo "ZeRO-1 = unsharded at W=$top, --zero-overlap 1" || bad=1
  local half=$((top / 2))
  cp -r "$W/w$top" "$W/resumed"
  mpi "$half" "${TRAIN[@]}" --batch-size 2 --grad-accum $((8 / half)) --max-steps 6 --out "$W/resumed" \
    --resume "$W/resumed/checkpoint-3" || return 1
  same_steps "$W/w$top/log.jsonl" "$W/resumed/log.jsonl" 2e-2 && echo "saved at $top, resumed at $half: same steps" ||
    bad=1
  return $bad
}

# Weak scaling: 8 pairs per GPU per step on a ~1B-shaped model, tokens/s of steps 3-10; the largest W again with
# --zero-overlap 1 (the overlapped reduction's gain). The digit task's pairs are ~25 tokens (rows are padded to the
# batch's longest, not to --max-length), so a step is little compute beside the 1B-parameter reduction: the worst
# case for scaling. Each run's final/ (F32 weights and AdamW moments, 11.7 GB here) is deleted once read: five of
# them would fill a 64 GB disk.
scaling() {
  local w top=1 flags name
  ./make_synthetic_data --out "$W/big-data" --pairs 2048 --eval 8 --seed 5 --model-out "$W/big" --layers 16 \
    --hidden 2048 --heads 32 --kv-heads 8 --ffn 8192 >/dev/null &&
    ./prepare_data --tokenizer "$W/big" --template chatml --in "$W/big-data/train.jsonl" --out "$W/big.bin" \
      --max-length 1024 >/dev/null || return 1
  for w in $(sizes) overlap; do
    flags=()
    if [ "$w" = overlap ]; then w=$top flags=(--zero-overlap 1) name=scale${top}overlap; else top=$w name=scale$w; fi
    mpi "$w" ./train_stapo --model "$W/big" --data "$W/big.bin" --batch-size 8 --max-length 1024 --max-steps 10 \
      --step0-pairs 0 "${flags[@]}" --out "$W/$name" >"$W/$name.log" 2>&1 || { tail -n 5 "$W/$name.log"; return 1; }
    grep '"tokens_per_s"' "$W/$name/log.jsonl" | tail -n 8 |
      sed -E 's/.*"tokens_per_s":([^,]+).*/\1/' | awk -v w="$w" -v how="${flags[*]}" '{ s += $1; n++ }
        END { printf "W=%d%s: %.0f tokens/s (%.0f per GPU)\n", w, how == "" ? "" : " " how, s / n, s / n / w }'
    rm -rf "$W/$name/final"
  done
}

# Limits add up to 11.9 minutes. The scaling part's 300 s: writing the ~1B model alone took 42 s on a 2-core CPU, and
# each of its five runs loads it and saves an 11.7 GB final/ (60 s, the first guess, would have cut it short).
run_part versions 15 versions
run_part build 225 configure_and_build
# The later parts need the environment the build part set up in its child (the sysroot's libraries and MPI), and the
# sysroot's launcher, the one the binaries were linked for: its Debian package has mpirun.openmpi, not `mpirun`
# (an alternatives link, which unpacking does not make), so on a node without OpenMPI `mpirun` is not found.
if [ -f .sysroot/env.sh ]; then
  # shellcheck disable=SC1091
  source .sysroot/env.sh
  mpirun_bin=$STAPO_MPIRUN
fi
run_part nccl_w1 60 nccl_w1
run_part busbw 40 busbw
run_part train_equiv 75 train_equivalence
run_part scaling 300 scaling
echo
echo "== summary (logs in $out)"
printf '%s\n' "${summary[@]}"
grep -h '"busbw_GBps"' "$out/busbw.log" 2>/dev/null
grep -h 'tokens/s' "$out/scaling.log" 2>/dev/null
