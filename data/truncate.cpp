#include "data/truncate.h"

#include <algorithm>

#include "common/error.h"

namespace stapo {

Truncation truncation_from_name(const std::string& name) {
  if (name == "keep_end") return Truncation::keep_end;
  if (name == "keep_start") return Truncation::keep_start;
  fail("--truncation must be keep_end or keep_start, got '", name, "'");
}

const char* truncation_name(Truncation truncation) {
  return truncation == Truncation::keep_end ? "keep_end" : "keep_start";
}

void truncation_check(const TruncationConfig& config) {
  STAPO_CHECK(config.max_length >= 2, "--max-length must be at least 2 (one prompt token and one response token), got ",
              config.max_length);
  STAPO_CHECK(config.max_prompt_length >= 1 && config.max_prompt_length <= config.max_length,
              "--max-prompt-length must be in [1, --max-length=", config.max_length, "], got ",
              config.max_prompt_length);
}

TruncationResult truncate_pair(std::vector<int32_t>& prompt, std::vector<int32_t>& chosen,
                               std::vector<int32_t>& rejected, const TruncationConfig& config, bool keep_first) {
  TruncationResult result;
  auto longer_response = static_cast<int64_t>(std::max(chosen.size(), rejected.size()));
  auto fits = [&] { return static_cast<int64_t>(prompt.size()) + longer_response <= config.max_length; };
  if (fits()) return result;

  auto keep = static_cast<size_t>(config.max_prompt_length);
  if (prompt.size() > keep) {
    result.prompt_truncated = true;
    if (config.truncation == Truncation::keep_start) {
      prompt.resize(keep);
    } else {
      size_t head = (keep_first && keep >= 1) ? 1 : 0;  // the BOS
      prompt.erase(prompt.begin() + static_cast<std::ptrdiff_t>(head),
                   prompt.end() - static_cast<std::ptrdiff_t>(keep - head));
    }
  }
  if (fits()) return result;

  int64_t room = config.max_length - static_cast<int64_t>(prompt.size());
  if (room < 1) {
    result.skip_reason = "prompt leaves no room for a response";
    return result;
  }
  result.responses_truncated = true;
  for (auto* response : {&chosen, &rejected})
    if (static_cast<int64_t>(response->size()) > room) response->resize(static_cast<size_t>(room));
  return result;
}

}  // namespace stapo
