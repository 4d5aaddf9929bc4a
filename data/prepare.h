// prepare_data's work as a library call (the binary and the tests run the same code): JSONL files →
// records (data/preference_jsonl.h) → ids (data/pair_tokenize.h) → truncation (data/truncate.h) → one shard.
#pragma once
#include <string>
#include <vector>

#include "data/preference_jsonl.h"  // defines: ReadCounts
#include "data/truncate.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace stapo {

struct PrepareConfig {
  std::vector<std::string> inputs;  // JSONL files, layout detected per file
  std::string output;               // the shard
  TruncationConfig truncation;
  bool skip_bad = false;  // count bad lines instead of stopping at the first
};

struct PrepareStats {
  ReadCounts input;  // lines read, and skipped by reason (bad lines, and pairs truncation cannot keep)
  int64_t written = 0, tokens = 0;
  int64_t truncated = 0, prompts_truncated = 0, responses_truncated = 0;  // among written pairs
  std::string report() const;  // the lines prepare_data prints
};

PrepareStats prepare_data(const Tokenizer& tokenizer, const ChatTemplate& chat_template, const PrepareConfig& config);

}  // namespace stapo
