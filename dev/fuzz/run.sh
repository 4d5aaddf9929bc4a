#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and runs each for SECONDS.
# Not part of the CMake build. Needs clang-14, libclang-rt-14-dev and the Debian -dev packages of the build.
#   dev/fuzz/run.sh [SECONDS] [TARGET...]     (default 300 s each; all targets; from anywhere)
# Targets (dev/fuzz/<name>_fuzz.cpp):
#   tokenizer    tokenizer.json / SentencePiece .model / tiktoken loaders, encode/decode (seeds: make_seeds.py)
#   jsonl        the preference JSONL reader (seeds: tests/fixtures/data/*.jsonl, the synthetic data)
#   shard        the shard reader and the dataloader (seeds: shards prepare_data writes)
#   safetensors  the safetensors reader and a sharded index (seeds: checkpoints make_synthetic_data writes)
#   config       config.json (seeds: the fixture and synthetic configs)
# The seeds of every target but the tokenizer's are made by the project's own binaries (no Python); they are
# built first with cmake into build/. Crash reproducers land in build-fuzz/<target>/ (crash-*); rerun one
# with build-fuzz/<target>_fuzz FILE. The last lines of each run (runs, coverage, crashes) go to
# build-fuzz/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-300}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(tokenizer jsonl shard safetensors config)
OUT=build-fuzz
CXX=${CXX:-clang++-14}
mkdir -p "$OUT"
read -ra PCRE2_LIBS <<< "$(pkg-config --libs libpcre2-8)"
tokenizer_sources=()
for f in tokenizer/*.cpp; do [ "$f" = tokenizer/tokenize.cpp ] || tokenizer_sources+=("$f"); done
common_sources=(common/file_io.cpp common/checksum.cpp common/progress.cpp)

seeds() {  # seeds TARGET DIR: the starting corpus
  local target=$1 dir=$2 tmp="$OUT/made"
  mkdir -p "$dir"
  if [ "$target" = tokenizer ]; then python3 dev/fuzz/make_seeds.py "$dir"; return; fi
  if [ ! -f "$tmp/train.bin" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j "$(nproc)" --target make_synthetic_data prepare_data >/dev/null
    rm -rf "$tmp" && mkdir -p "$tmp"
    ./make_synthetic_data --out "$tmp/data" --pairs 6 --eval 2 --seed 5 --model-out "$tmp/model" --layers 1 \
      --hidden 8 --heads 2 --kv-heads 1 --ffn 8 --merges 4 >/dev/null
    ./prepare_data --tokenizer "$tmp/model" --template chatml --in "$tmp/data/train.jsonl" --out "$tmp/train.bin" \
      >/dev/null
    ./prepare_data --tokenizer "$tmp/model" --template plain --in "$tmp/data/eval.jsonl" --out "$tmp/eval.bin" \
      >/dev/null
  fi
  case $target in
    jsonl) cp tests/fixtures/data/*.jsonl "$tmp/data/train.jsonl" "$dir/" ;;
    shard) cp "$tmp/train.bin" "$tmp/eval.bin" "$dir/" ;;
    safetensors)
      { printf '\0'; cat "$tmp/model/model.safetensors"; } >"$dir/single"
      printf '\1{"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}' \
        >"$dir/index" ;;
    config)
      cp "$tmp/model/config.json" "$dir/synthetic.json"
      for f in tests/fixtures/model/*/config.json; do cp "$f" "$dir/$(basename "$(dirname "$f")").json"; done ;;
  esac
}

for target in "${TARGETS[@]}"; do
  case $target in
    tokenizer) sources=("${tokenizer_sources[@]}") ;;
    jsonl) sources=(data/preference_jsonl.cpp "${tokenizer_sources[@]}") ;;
    shard) sources=(data/shard.cpp data/pair_loader.cpp data/truncate.cpp) ;;
    safetensors) sources=(model/safetensors.cpp) ;;
    config) sources=(model/config.cpp) ;;
    *) echo "unknown target $target (tokenizer, jsonl, shard, safetensors, config)" >&2; exit 2 ;;
  esac
  echo "== $target: build"
  "$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
    -DSTAPO_SOURCE_DIR="\"$PWD\"" "dev/fuzz/${target}_fuzz.cpp" \
    "${common_sources[@]}" "${sources[@]}" "${PCRE2_LIBS[@]}" -o "$OUT/${target}_fuzz"
  seeds "$target" "$OUT/seeds/$target"
  mkdir -p "$OUT/corpus/$target" "$OUT/$target"
  echo "== $target: ${SECONDS_TO_RUN}s"
  (cd "$OUT/$target" && "../${target}_fuzz" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=20 \
    -rss_limit_mb=4096 -print_final_stats=1 "../corpus/$target" "../seeds/$target") >"$OUT/$target.log" 2>&1 ||
    { tail -n 40 "$OUT/$target.log"; echo "== $target: FAILED (reproducer in $OUT/$target/)"; exit 1; }
  grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss" "$OUT/$target.log" | tail -n 3
done
