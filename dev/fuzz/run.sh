#!/usr/bin/env bash
# Builds the libFuzzer target dev/fuzz/tokenizer_fuzz.cpp (clang, -fsanitize=fuzzer,address,undefined) and runs
# it. Not part of the CMake build. Needs clang and libclang-rt-14-dev.
#   dev/fuzz/run.sh [SECONDS]     (default 300; from anywhere)
# Seeds: small tokenizer files and texts written by dev/fuzz/make_seeds.py into build-fuzz/seeds/.
# Crash reproducers land in build-fuzz/ (crash-*); rerun one with build-fuzz/tokenizer_fuzz FILE.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-300}
OUT=build-fuzz
mkdir -p "$OUT/seeds" "$OUT/corpus"
CXX=${CXX:-clang++-14}
SOURCES=(dev/fuzz/tokenizer_fuzz.cpp common/file_io.cpp)
for f in tokenizer/*.cpp; do [ "$f" = tokenizer/tokenize.cpp ] || SOURCES+=("$f"); done
read -ra PCRE2_LIBS <<< "$(pkg-config --libs libpcre2-8)"
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
  -DSTAPO_SOURCE_DIR="\"$PWD\"" "${SOURCES[@]}" "${PCRE2_LIBS[@]}" -o "$OUT/tokenizer_fuzz"
python3 dev/fuzz/make_seeds.py "$OUT/seeds"
cd "$OUT"
./tokenizer_fuzz -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
  -print_final_stats=1 corpus seeds
