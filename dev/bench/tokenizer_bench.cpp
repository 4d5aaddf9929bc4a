// Encode throughput of one stapo tokenizer on one thread, in MB/s: every document of a JSONL file of
// strings encoded in turn, best of `runs` passes. Built and run by dev/bench/tokenizer.sh (which times the
// reference library on the same documents and vocabulary).
//   tokenizer_bench TOKENIZER DOCS.jsonl [runs]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/file_io.h"       // defines: read_text_file
#include "tokenizer/tokenizer.h"  // defines: Tokenizer

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s TOKENIZER DOCS.jsonl [runs]\n", argv[0]);
    return 2;
  }
  auto tok = stapo::Tokenizer::load(argv[1]);
  std::vector<std::string> docs;
  size_t bytes = 0;
  std::string text = stapo::read_text_file(argv[2]);
  for (size_t pos = 0, end; pos < text.size(); pos = end + 1) {
    end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) docs.push_back(nlohmann::json::parse(text.substr(pos, end - pos)).get<std::string>());
    if (end > pos) bytes += docs.back().size();
  }
  int runs = argc > 3 ? atoi(argv[3]) : 3;
  double best = 1e30;
  size_t n_ids = 0;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    n_ids = 0;
    for (const std::string& doc : docs) n_ids += tok->encode(doc).size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  printf("%.2f MB/s (%zu documents, %zu bytes -> %zu ids, best of %d)\n", bytes / best / 1e6, docs.size(), bytes,
         n_ids, runs);
  return 0;
}
