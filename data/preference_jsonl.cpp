#include "data/preference_jsonl.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "tokenizer/utf8.h"  // defines: utf8_char_length

namespace stapo {

using json = nlohmann::json;

namespace {

// Stands in for each invalid byte so the line still parses and the field holding it can be named.
// U+10FFFF is a noncharacter: real text does not contain it.
constexpr char kInvalidMarker[] = "\xF4\x8F\xBF\xBF";

std::string replace_invalid_bytes(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8_char_length(text, i);
    if (n == 0) {
      out += kInvalidMarker;
      ++i;
    } else {
      out.append(text, i, n);
      i += n;
    }
  }
  return out;
}

// Path of the first key or string value holding the marker, e.g. "chosen[1].content".
std::optional<std::string> find_marker(const json& value, const std::string& path) {
  if (value.is_string()) {
    if (value.get_ref<const std::string&>().find(kInvalidMarker) != std::string::npos) return path;
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i)
      if (auto found = find_marker(value[i], cat(path, "[", i, "]"))) return found;
  } else if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      std::string child_path = path.empty() ? key : path + "." + key;
      if (key.find(kInvalidMarker) != std::string::npos) return child_path;
      if (auto found = find_marker(child, child_path)) return found;
    }
  }
  return std::nullopt;
}

// Follows the key path while a line parses, so a syntax error can name the field where parsing stopped.
class FieldTracker : public nlohmann::json_sax<json> {
 public:
  std::string path() const {
    std::string out;
    for (const Frame& f : frames_) {
      if (f.is_array && f.count > 0) out += cat("[", f.count - 1, "]");
      if (!f.is_array && !f.key.empty()) out += (out.empty() ? "" : ".") + f.key;
    }
    return out;
  }
  std::string error;

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override { return open(false); }
  bool key(string_t& k) override {
    frames_.back().key = k;
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(true); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  struct Frame {
    bool is_array;
    std::string key;
    size_t count = 0;
  };
  std::vector<Frame> frames_;
  bool value() {
    if (!frames_.empty() && frames_.back().is_array) ++frames_.back().count;
    return true;
  }
  bool open(bool is_array) {
    value();
    frames_.push_back({is_array, "", 0});
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
};

LineProblem problem(std::string reason, std::string field, std::string detail) {
  return {std::move(reason), std::move(field), std::move(detail)};
}

const char* json_type(const json& v) { return v.type_name(); }

std::optional<LineProblem> get_string(const json& object, const std::string& key, const std::string& path,
                                      std::string& out) {
  auto it = object.find(key);
  if (it == object.end()) return problem("missing field", path, "is missing");
  if (!it->is_string())
    return problem("wrong type", path, cat("must be a string, got ", json_type(*it)));
  out = it->get<std::string>();
  return std::nullopt;
}

std::optional<LineProblem> parse_messages(const json& list, const std::string& field, std::vector<ChatMessage>& out) {
  out.clear();
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = cat(field, "[", i, "]");
    const json& m = list[i];
    if (!m.is_object())
      return problem("wrong type", path, cat("must be a message {\"role\", \"content\"}, got ", json_type(m)));
    ChatMessage message;
    if (auto p = get_string(m, "role", path + ".role", message.role)) return p;
    if (message.role != "system" && message.role != "user" && message.role != "assistant")
      return problem("unknown role", path + ".role",
                     cat("is '", message.role, "'; expected system, user or assistant"));
    auto content = m.find("content");
    if (content != m.end() && content->is_array())
      return problem("wrong type", path + ".content", "is a list of parts; only text content (a string) is supported");
    if (auto p = get_string(m, "content", path + ".content", message.content)) return p;
    out.push_back(std::move(message));
  }
  return std::nullopt;
}

// The message list object[key]; `expected` names the list the layout wants (for the wrong-type message).
std::optional<LineProblem> get_messages(const json& object, const char* key, const char* expected,
                                        std::vector<ChatMessage>& out) {
  auto it = object.find(key);
  if (it == object.end()) return problem("missing field", key, "is missing");
  if (!it->is_array()) return problem("wrong type", key, cat("must be ", expected, ", got ", json_type(*it)));
  return parse_messages(*it, key, out);
}

// The single assistant message a response list must hold.
std::optional<LineProblem> single_assistant(const std::vector<ChatMessage>& messages, size_t first,
                                            const std::string& field, std::string& content) {
  size_t count = messages.size() - first;
  if (count != 1 || messages[first].role != "assistant")
    return problem("not one assistant message", field,
                   cat("must continue the prompt with exactly one assistant message, found ", count, " message",
                       count == 1 ? cat(" with role '", messages[first].role, "'") : std::string("s")));
  content = messages[first].content;
  return std::nullopt;
}

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

std::optional<PreferenceFormat> shape_of(const json& j) {
  auto chosen = j.find("chosen");
  if (chosen == j.end()) return std::nullopt;
  if (chosen->is_string()) return PreferenceFormat::plain;
  if (!chosen->is_array()) return std::nullopt;
  auto prompt = j.find("prompt");
  if (prompt != j.end() && prompt->is_array()) return PreferenceFormat::conversational;
  return PreferenceFormat::whole;
}

std::optional<LineProblem> parse_plain(const json& j, PreferenceRecord& record) {
  std::string prompt;
  if (auto p = get_string(j, "prompt", "prompt", prompt)) return p;
  if (auto p = get_string(j, "chosen", "chosen", record.chosen)) return p;
  if (auto p = get_string(j, "rejected", "rejected", record.rejected)) return p;
  record.prompt = {{"user", prompt}};
  return std::nullopt;
}

std::optional<LineProblem> parse_conversational(const json& j, PreferenceRecord& record) {
  if (auto p = parse_messages(j["prompt"], "prompt", record.prompt)) return p;
  if (record.prompt.empty()) return problem("empty prompt", "prompt", "is an empty list of messages");
  for (const char* key : {"chosen", "rejected"}) {
    std::vector<ChatMessage> messages;
    if (auto p = get_messages(j, key, "a list of messages like 'prompt'", messages)) return p;
    if (auto p = single_assistant(messages, 0, key, key[0] == 'c' ? record.chosen : record.rejected)) return p;
  }
  return std::nullopt;
}

std::optional<LineProblem> parse_whole(const json& j, PreferenceRecord& record) {
  std::vector<ChatMessage> chosen, rejected;
  for (const char* key : {"chosen", "rejected"}) {
    if (auto p = get_messages(j, key, "a list of messages (whole conversation)", key[0] == 'c' ? chosen : rejected))
      return p;
  }
  auto same = [](const ChatMessage& a, const ChatMessage& b) { return a.role == b.role && a.content == b.content; };
  size_t shared = 0;
  while (shared < chosen.size() && shared < rejected.size() && same(chosen[shared], rejected[shared])) ++shared;
  if (shared == chosen.size() && shared == rejected.size())
    return problem("identical responses", "rejected", "is the same conversation as chosen");
  if (shared == 0)
    return problem("no shared prompt", "chosen",
                   "and rejected must start with the same prompt turns (whole-conversation layout)");
  if (auto p = single_assistant(chosen, shared, "chosen", record.chosen)) return p;
  if (auto p = single_assistant(rejected, shared, "rejected", record.rejected)) return p;
  record.prompt.assign(chosen.begin(), chosen.begin() + static_cast<std::ptrdiff_t>(shared));
  return std::nullopt;
}

}  // namespace

const char* preference_format_name(PreferenceFormat format) {
  switch (format) {
    case PreferenceFormat::plain: return "plain (prompt/chosen/rejected strings)";
    case PreferenceFormat::conversational: return "conversational (message lists)";
    case PreferenceFormat::whole: return "whole conversations (shared prompt turns)";
  }
  return "?";
}

std::optional<size_t> first_invalid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8_char_length(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::optional<LineProblem> parse_preference_line(std::string_view line, std::optional<PreferenceFormat>& format,
                                                 PreferenceRecord& record) {
  if (auto bad = first_invalid_utf8(line)) {
    std::string field;
    json repaired = json::parse(replace_invalid_bytes(line), nullptr, false);
    if (!repaired.is_discarded()) field = find_marker(repaired, "").value_or("");
    return problem("invalid UTF-8", field,
                   cat("holds bytes that are not UTF-8 (first at byte ", *bad + 1, " of the line); re-encode the file as UTF-8"));
  }
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded()) {
    FieldTracker tracker;
    json::sax_parse(line, &tracker);
    return problem("malformed JSON", tracker.path(), cat("(where parsing stopped): ", tracker.error));
  }
  if (!j.is_object()) return problem("wrong type", "", cat("the line must be a JSON object, got ", json_type(j)));

  record = PreferenceRecord{};
  if (auto id = j.find("id"); id != j.end()) {
    if (id->is_string()) record.id = id->get<std::string>();
    else if (id->is_number_integer()) record.id = id->dump();
    else return problem("wrong type", "id", cat("must be a string or an integer, got ", json_type(*id)));
  }
  if (!j.contains("chosen")) return problem("missing field", "chosen", "is missing");
  std::optional<PreferenceFormat> shape = shape_of(j);
  if (!shape)
    return problem("wrong type", "chosen", cat("must be a string or a list of messages, got ", json_type(j["chosen"])));
  if (!format) format = shape;
  if (*shape != *format)
    return problem("wrong type", *shape == PreferenceFormat::conversational ? "prompt" : "chosen",
                   cat("makes this line ", preference_format_name(*shape), " but the file's first record is ",
                       preference_format_name(*format)));

  std::optional<LineProblem> p;
  switch (*format) {
    case PreferenceFormat::plain: p = parse_plain(j, record); break;
    case PreferenceFormat::conversational: p = parse_conversational(j, record); break;
    case PreferenceFormat::whole: p = parse_whole(j, record); break;
  }
  if (p) return p;
  if (is_blank(record.chosen)) return problem("empty response", "chosen", "is empty");
  if (is_blank(record.rejected)) return problem("empty response", "rejected", "is empty");
  if (record.chosen == record.rejected) return problem("identical responses", "rejected", "is identical to chosen");
  return std::nullopt;
}

std::string line_problem_message(const std::string& path, int64_t line_number, const LineProblem& problem) {
  std::string where = problem.field.empty() ? std::string() : cat(" field '", problem.field, "'");
  return cat(path, ":", line_number, ":", where, " ", problem.detail, " [", problem.reason,
             "]; fix the line or pass --skip-bad to skip such lines");
}

int64_t ReadCounts::skipped_total() const {
  int64_t total = 0;
  for (const auto& [reason, count] : skipped) total += count;
  return total;
}

void preference_file_read(const std::string& path, bool skip_bad, ReadCounts& counts,
                          const std::function<int64_t(int64_t, const PreferenceRecord&)>& on_record,
                          const std::function<int64_t()>& on_end) {
  std::string text = read_text_file(path);
  std::optional<PreferenceFormat> format;
  PreferenceRecord record;
  auto total_lines = static_cast<int64_t>(std::count(text.begin(), text.end(), '\n') +
                                          (!text.empty() && text.back() != '\n'));
  Progress progress("reading " + path, total_lines);
  int64_t line_number = 0, tokens = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    ++counts.read;
    if (auto problem = parse_preference_line(line, format, record)) {
      STAPO_CHECK(skip_bad, line_problem_message(path, line_number, *problem));
      ++counts.skipped[problem->reason];
    } else {
      tokens += on_record(line_number, record);
    }
    if (line_number % 1000 == 0 && line_number < total_lines) {
      progress.update(line_number, tokens);
      tokens = 0;
    }
  }
  progress.update(line_number, tokens + on_end());
  progress.finish();
}

}  // namespace stapo
