// Finds added/special tokens in text: a byte trie, leftmost-longest (as HF's added vocabulary and
// tiktoken's special-token split). Special tokens are only looked for when the caller allows them;
// non-special added tokens (HF "added_tokens" with special=false, sentencepiece user-defined symbols)
// are always found, as the reference libraries do.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"  // defines: SpecialRanges

namespace stapo {

class TokenMatcher {
 public:
  struct Token {
    int32_t id = -1;
    bool special = false;
    bool lstrip = false, rstrip = false;  // HF: the token absorbs whitespace on that side
  };
  void add(const std::string& text, const Token& token);
  bool empty() const { return nodes_.size() <= 1; }
  // The longest token starting at text[pos] (its byte length in *len), or nullptr; a special token only when
  // it ends at or before special_end.
  const Token* match(std::string_view text, size_t pos, size_t special_end, size_t* len) const;

  // Splits text into pieces: on_text(text_piece, byte_offset) for each stretch between tokens (never
  // empty), on_token(id) for each token. Special tokens are found only inside special_ranges.
  template <typename OnText, typename OnToken>
  void split(std::string_view text, const SpecialRanges& special_ranges, OnText&& on_text, OnToken&& on_token) const {
    size_t piece_start = 0, pos = 0, range = 0;
    while (pos < text.size()) {
      while (range < special_ranges.size() && special_ranges[range].second <= pos) ++range;
      size_t special_end =
          range < special_ranges.size() && special_ranges[range].first <= pos ? special_ranges[range].second : 0;
      size_t len;
      const Token* token = first_byte_[static_cast<uint8_t>(text[pos])] ? match(text, pos, special_end, &len)
                                                                          : nullptr;
      if (!token) {
        ++pos;
        continue;
      }
      size_t piece_end = pos, next = pos + len;
      if (token->lstrip) piece_end = skip_white_space_backward(text, piece_start, piece_end);
      if (token->rstrip) next = skip_white_space_forward(text, next);
      if (piece_end > piece_start) on_text(text.substr(piece_start, piece_end - piece_start), piece_start);
      on_token(token->id);
      piece_start = pos = next;
    }
    if (piece_start < text.size()) on_text(text.substr(piece_start), piece_start);
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                 // index into tokens_ when a token ends here
  };
  static size_t skip_white_space_backward(std::string_view text, size_t begin, size_t end);
  static size_t skip_white_space_forward(std::string_view text, size_t pos);

  std::vector<Node> nodes_{1};
  std::vector<Token> tokens_;
  bool first_byte_[256] = {};
};

}  // namespace stapo
