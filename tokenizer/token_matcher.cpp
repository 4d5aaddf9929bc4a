// Byte trie of added tokens; strip flags use Unicode White_Space (Rust's char::is_whitespace, which HF uses).
#include "tokenizer/token_matcher.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace stapo {

void TokenMatcher::add(const std::string& text, const Token& token) {
  if (text.empty()) return;
  int32_t node = 0;
  for (char c : text) {
    auto byte = static_cast<uint8_t>(c);
    auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, INT32_MIN));
    if (it != children.end() && it->first == byte) {
      node = it->second;
    } else {
      int32_t child = static_cast<int32_t>(nodes_.size());
      children.insert(it, {byte, child});
      nodes_.emplace_back();
      node = child;
    }
  }
  first_byte_[static_cast<uint8_t>(text[0])] = true;
  if (nodes_[node].token < 0) {
    nodes_[node].token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
  } else {
    tokens_[nodes_[node].token] = token;  // the later definition wins, as in a JSON map
  }
}

const TokenMatcher::Token* TokenMatcher::match(std::string_view text, size_t pos, size_t special_end,
                                               size_t* len) const {
  const Token* best = nullptr;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, INT32_MIN));
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    int32_t t = nodes_[node].token;
    if (t >= 0 && (!tokens_[t].special || i + 1 <= special_end)) {
      best = &tokens_[t];
      *len = i + 1 - pos;
    }
  }
  return best;
}

size_t TokenMatcher::skip_white_space_forward(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    size_t len = utf8_char_length(text, pos);
    if (len == 0 || !utf8_is_white_space(utf8_decode(text, pos, len))) break;
    pos += len;
  }
  return pos;
}

size_t TokenMatcher::skip_white_space_backward(std::string_view text, size_t begin, size_t end) {
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    size_t len = utf8_char_length(text, start);
    if (len != end - start || !utf8_is_white_space(utf8_decode(text, start, len))) break;
    end = start;
  }
  return end;
}

}  // namespace stapo
