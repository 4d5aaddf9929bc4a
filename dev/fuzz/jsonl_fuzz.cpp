// libFuzzer target for the preference JSONL reader (data/preference_jsonl.h): arbitrary bytes as lines of one
// file, each parsed with the layout the first good line fixed, and the problem message of each bad line
// built as prepare_data would. A LineProblem or a stapo::Error is the only acceptable failure; crashes,
// ASan/UBSan reports and hangs are bugs. Built and run by dev/fuzz/run.sh (see docs/data-format.md).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/error.h"            // defines: Error
#include "data/preference_jsonl.h"  // defines: parse_preference_line, line_problem_message

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<stapo::PreferenceFormat> format;
  int64_t number = 0;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    ++number;
    try {
      stapo::PreferenceRecord record;
      if (auto problem = stapo::parse_preference_line(line, format, record))
        (void)stapo::line_problem_message("fuzz.jsonl", number, *problem);
    } catch (const stapo::Error&) {
    }
    start = end + 1;
  }
  return 0;
}
