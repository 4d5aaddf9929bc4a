#!/usr/bin/env bash
# Encode throughput, one thread: stapo's tokenizers vs HF `tokenizers` (and `sentencepiece` for the .model)
# on the same documents and the same vocabulary. Documents (~2 KB, like preference-data rows) are made of
# the fixture corpus strings (English, code, digits, CJK, emoji, ...), about 4 MB in all; each side encodes
# them one by one (HF: encode_batch with parallelism off; sentencepiece: its list encode, one thread), best
# of 3 passes.
#   dev/bench/tokenizer.sh            (from the repository root; builds into build-bench-tok/)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench-tok}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release > "$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j 2 --target stapo_tokenizer > /dev/null
read -ra PCRE2_LIBS <<< "$(pkg-config --libs libpcre2-8)"
g++ -std=c++17 -O3 -march=native -I. dev/bench/tokenizer_bench.cpp "$BUILD/tokenizer/libstapo_tokenizer.a" \
  "$BUILD/common/libstapo_common.a" "${PCRE2_LIBS[@]}" -o "$BUILD/tokenizer_bench"

TEXT="$BUILD/bench_docs.jsonl"
python3 - "$TEXT" <<'PY'
import json, random, sys
lines = [json.loads(l) for l in open("tests/fixtures/tokenizer/corpus.jsonl", encoding="utf-8")]
rng, docs, size = random.Random(0), [], 0
while size < 4_000_000:
    doc = "\n".join(rng.choice(lines) for _ in range(20))
    docs.append(doc)
    size += len(doc.encode())
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
PY

export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
hf_mbps() {  # tokenizer.json → MB/s of HF tokenizers' encode (no special-token parsing, as ours)
  python3 - "$1" "$TEXT" <<'PY'
import sys, time
from tokenizers import Tokenizer
import json
tok = Tokenizer.from_file(sys.argv[1]); tok.encode_special_tokens = True
docs = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]; n = sum(len(d.encode()) for d in docs)
best = min((lambda t0: (tok.encode_batch(docs, add_special_tokens=False), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
print(f"{n / best / 1e6:.2f}")
PY
}
sp_mbps() {
  python3 - "$1" "$TEXT" <<'PY'
import sys, time
import sentencepiece as spm
import json
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
docs = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]; n = sum(len(d.encode()) for d in docs)
best = min((lambda t0: (sp.encode(docs, num_threads=1), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
print(f"{n / best / 1e6:.2f}")
PY
}
ours_mbps() { "$BUILD/tokenizer_bench" "$1" "$TEXT" 3 | awk '{print $1}'; }

printf "%-44s %10s %12s %7s\n" tokenizer "ours MB/s" "ref MB/s" ratio
row() {  # name, our path, reference MB/s
  local ours; ours=$(ours_mbps "$2")
  printf "%-44s %10s %12s %7s\n" "$1" "$ours" "$3" "$(python3 -c "print(f'{$ours/$3:.2f}')")"
}
F=tests/fixtures/tokenizer
row "bl_llama3 (byte-level, Llama 3 split) vs HF" $F/bl_llama3 "$(hf_mbps $F/bl_llama3/tokenizer.json)"
row "bl_gpt2 (byte-level, GPT-2 regex) vs HF" $F/bl_gpt2 "$(hf_mbps $F/bl_gpt2/tokenizer.json)"
row "sp_legacy (SentencePiece-style json) vs HF" $F/sp_legacy "$(hf_mbps $F/sp_legacy/tokenizer.json)"
row "sp_model (.model) vs sentencepiece" $F/sp_model/tokenizer.model "$(sp_mbps $F/sp_model/tokenizer.model)"
LLAMA2=${STAPO_SHARED:-../shared}/tokenizers/llama2/tokenizer.model
if [ -f "$LLAMA2" ]; then row "llama2 tokenizer.model vs sentencepiece" "$LLAMA2" "$(sp_mbps "$LLAMA2")"; fi
