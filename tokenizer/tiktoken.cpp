// tiktoken BPE files (Llama 3's tokenizer.model): one "base64(token bytes) rank" per line, rank = id.
// tiktoken merges the adjacent pair whose concatenation has the lowest rank; that is byte-level BPE with
// a merge (a, b) → a+b of rank(a+b) for every token split into two tokens, plus "a whole pre-token in the
// vocabulary is one token" (ignore_merges). The pre-tokenizer is Llama 3's regex and the special tokens
// are Llama 3's 256, numbered after the file's ranks as Meta's tokenizer.py numbers them.
#include "common/error.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer_files.h"

namespace stapo {

static const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

static std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> names = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                                    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                                    "<|python_tag|>"};
  for (int i = 2; names.size() < 256; ++i) names.push_back(cat("<|reserved_special_token_", i, "|>"));
  return names;
}

static int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

static bool base64_decode(std::string_view text, std::string& out) {
  out.clear();
  uint32_t bits = 0;
  int nbits = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] != '='; ++i) {
    int v = base64_value(text[i]);
    if (v < 0) return false;
    bits = bits << 6 | v;
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out += static_cast<char>((bits >> nbits) & 0xFF);
    }
  }
  for (; i < text.size(); ++i)
    if (text[i] != '=') return false;
  return !out.empty();
}

std::unique_ptr<Tokenizer> load_tiktoken(const std::string& path, const std::string& contents,
                                         const TokenizerConfig& config) {
  BpeTokenizer::Parts p;
  std::string token;
  size_t line_no = 0;
  for (size_t pos = 0; pos < contents.size();) {
    size_t end = contents.find('\n', pos);
    if (end == std::string::npos) end = contents.size();
    std::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t space = line.find(' ');
    STAPO_CHECK(space != std::string_view::npos && base64_decode(line.substr(0, space), token), path, ":",
                line_no, ": expected \"<base64 token> <rank>\"");
    int64_t rank = 0;
    std::string_view digits = line.substr(space + 1);
    STAPO_CHECK(!digits.empty() && digits.size() < 9, path, ":", line_no, ": bad rank \"", digits, "\"");
    for (char c : digits) {
      STAPO_CHECK(c >= '0' && c <= '9', path, ":", line_no, ": bad rank \"", digits, "\"");
      rank = rank * 10 + (c - '0');
    }
    STAPO_CHECK(rank < kMaxVocabSize && token.size() <= kMaxTokenBytes, path, ":", line_no,
                ": rank or token length out of range");
    STAPO_CHECK(p.token_ids.emplace(token, static_cast<int32_t>(rank)).second, path, ":", line_no, ": token listed twice");
    if (p.tokens.size() <= static_cast<size_t>(rank)) p.tokens.resize(rank + 1);
    p.tokens[rank] = token;
  }
  STAPO_CHECK(p.token_ids.size() == p.tokens.size(), path, ": ranks are not 0..", p.token_ids.size() - 1,
              " without gaps");
  for (int b = 0; b < 256; ++b) {
    auto it = p.token_ids.find(std::string(1, static_cast<char>(b)));
    STAPO_CHECK(it != p.token_ids.end(), path, ": no token for byte ", b, " (tiktoken needs all 256)");
    p.byte_ids[b] = it->second;
  }
  for (const auto& [bytes, id] : p.token_ids) {
    for (size_t k = 1; k < bytes.size(); ++k) {
      auto left = p.token_ids.find(bytes.substr(0, k));
      if (left == p.token_ids.end()) continue;
      auto right = p.token_ids.find(bytes.substr(k));
      if (right == p.token_ids.end()) continue;
      p.merges.emplace(static_cast<uint64_t>(left->second) << 32 | static_cast<uint32_t>(right->second),
                       BpeMerge{id, id});
    }
  }
  p.byte_level = true;
  p.ignore_merges = true;
  p.splits.push_back({std::make_shared<Regex>(kLlama3Pattern, false), SplitBehavior::isolated, false});
  p.added.assign(p.tokens.size(), false);
  for (const std::string& name : llama3_special_tokens()) {
    int32_t id = static_cast<int32_t>(p.tokens.size());
    p.tokens.push_back(name);
    p.added.push_back(true);
    p.added_ids[name] = id;
    p.added_matcher.add(name, {id, true, false, false});
  }
  p.bos_id = find_bos_eos(config.bos_token, kBosNames, p.added_ids);
  p.eos_id = find_bos_eos(config.eos_token, kEosNames, p.added_ids);
  p.adds_bos = config.add_bos_token.value_or(true);  // Meta's tokenizer and HF's Llama 3 prepend BOS
  p.content_hash = content_hash(contents);
  return std::make_unique<BpeTokenizer>(std::move(p));
}

}  // namespace stapo
