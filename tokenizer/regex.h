// Pre-tokenizer regexes on PCRE2 (UTF + UCP, JIT-compiled): the GPT-2 / Llama 3 split patterns use
// \p{L}, \p{N}, \s and lookahead, which PCRE2's backtracking matches the way HF's Oniguruma and tiktoken's
// fancy-regex do (leftmost-first). Matching is const and thread-safe (match data per call).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

typedef struct pcre2_real_code_8 pcre2_code_8;

namespace stapo {

class Regex {
 public:
  // literal: match `pattern` as plain text (HF Split's {"String": ...}).
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches, left to right, as (begin, end) byte offsets; text must be valid UTF-8.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

 private:
  pcre2_code_8* code_ = nullptr;
  bool jit_ = false;
};

}  // namespace stapo
