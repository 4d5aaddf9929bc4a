// Fitting one tokenized pair into --max-length, as TRL's DPOTrainer does it:
//   1. if prompt + longer response > max_length, cut the prompt to max_prompt_length
//      (keep_end keeps its last tokens, keep_start its first; a leading BOS always stays);
//   2. if it still does not fit, cut both responses (keeping their start) to max_length - prompt.
// Unlike TRL, a response is never cut to zero tokens (A(y) = S(y)/|y| would be NaN): when the prompt leaves
// no room, the pair is skipped with a reason. Tokenizer-independent so every path is testable on its own.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace stapo {

enum class Truncation { keep_end, keep_start };

Truncation truncation_from_name(const std::string& name);  // "keep_end" | "keep_start", else a stapo::Error
const char* truncation_name(Truncation truncation);

struct TruncationConfig {
  int32_t max_length = 1024;        // prompt + response tokens, BOS and end-of-turn included
  int32_t max_prompt_length = 512;  // prompt tokens kept when the pair is too long
  Truncation truncation = Truncation::keep_end;
};

void truncation_check(const TruncationConfig& config);  // flag sanity, errors name the flag

struct TruncationResult {
  bool prompt_truncated = false;
  bool responses_truncated = false;
  std::string skip_reason;  // non-empty: the pair cannot be kept
};

// Cuts in place. `keep_first`: the prompt's first token is a BOS that keep_end must not drop.
TruncationResult truncate_pair(std::vector<int32_t>& prompt, std::vector<int32_t>& chosen,
                               std::vector<int32_t>& rejected, const TruncationConfig& config, bool keep_first);

}  // namespace stapo
