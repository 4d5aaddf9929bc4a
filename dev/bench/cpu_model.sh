#!/usr/bin/env bash
# Times one forward+backward of the fp32 CPU reference model (bench_cpu_model) and of PyTorch CPU fp32
# (cpu_model_torch.py) on the same random Llama shape with the same thread count; prints both and the
# throughput ratio ours/PyTorch (goal >= 0.5).
#   THREADS=2 BUILD=build dev/bench/cpu_model.sh [shape flags, e.g. --layers 4 --hidden 256 --seq 256 --batch 4]
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2}
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$BUILD" -j "$THREADS" --target bench_cpu_model > /dev/null
# Passive waiting for both: on a machine shared with other jobs, spinning OpenMP threads that wait at a
# barrier for a descheduled peer make either program several times slower and the timing meaningless.
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ours=$("$BUILD/model/bench_cpu_model" "$@" 2>/dev/null | tail -1)
theirs=$(python3 dev/bench/cpu_model_torch.py --threads "$THREADS" "$@" 2>/dev/null | tail -1)
echo "$ours"
echo "$theirs"
echo "shape: ${*:-defaults (4 layers, hidden 256, 8 heads, 4 kv heads, ffn 768, vocab 32000, seq 256, batch 4)}"
python3 - "$ours" "$theirs" "$THREADS" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"threads {sys.argv[3]}: stapo {ours['median_ms']} ms, torch {theirs['median_ms']} ms per forward+backward; "
      f"throughput ratio stapo/torch = {theirs['median_ms'] / ours['median_ms']:.2f}")
PY
