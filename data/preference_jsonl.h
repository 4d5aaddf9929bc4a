// Preference pairs from JSONL, in the three layouts people publish (docs/data-format.md):
//   plain           {"prompt": str, "chosen": str, "rejected": str}
//   conversational  TRL: "prompt" a list of messages, "chosen"/"rejected" one assistant message each
//   whole           UltraFeedback-binarized: "chosen"/"rejected" whole conversations repeating the prompt
//                   turns; the shared prefix is the prompt, the one assistant message after it the response
// The layout is detected from the shape of the first line's "chosen" and every later line must follow it. An optional
// "id" (string or integer) is carried through; other fields are ignored. A bad line is a LineProblem naming
// the field, so the caller can stop with file:line or count a skip.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_template.h"  // defines: ChatMessage

namespace stapo {

enum class PreferenceFormat { plain, conversational, whole };
const char* preference_format_name(PreferenceFormat format);

struct PreferenceRecord {
  std::string id;                    // "" when the line has none
  std::vector<ChatMessage> prompt;   // the conversation before the response (plain: one user message)
  std::string chosen, rejected;      // assistant contents
};

struct LineProblem {
  std::string reason;  // short category, used to count skips ("missing field", "empty response", ...)
  std::string field;   // e.g. "chosen", "prompt[1].content"; "" for the whole line
  std::string detail;
};

// Parses one line. `format` is detected from this line when unset and then fixed for the file.
std::optional<LineProblem> parse_preference_line(std::string_view line, std::optional<PreferenceFormat>& format,
                                                 PreferenceRecord& record);

// "train.jsonl:17: field 'chosen' is empty [empty response]; fix the line or pass --skip-bad ...".
std::string line_problem_message(const std::string& path, int64_t line_number, const LineProblem& problem);

struct ReadCounts {  // accumulates over files
  int64_t read = 0;                        // non-blank lines
  std::map<std::string, int64_t> skipped;  // by reason
  int64_t skipped_total() const;
};

// Calls on_record(line_number, record) for each good record of `path`, in order, then on_end() once (to
// finish buffered work); both return the tokens they produced, for the progress line. Blank lines are not
// records. A bad line is a stapo::Error naming path, line and field, or, with skip_bad, one more in
// counts.skipped[reason].
void preference_file_read(const std::string& path, bool skip_bad, ReadCounts& counts,
                          const std::function<int64_t(int64_t, const PreferenceRecord&)>& on_record,
                          const std::function<int64_t()>& on_end = [] { return int64_t{0}; });

// Byte offset of the first invalid UTF-8 sequence in text, or nullopt when text is valid UTF-8.
std::optional<size_t> first_invalid_utf8(std::string_view text);

}  // namespace stapo
