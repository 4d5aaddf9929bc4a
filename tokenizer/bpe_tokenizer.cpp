// Encoding follows HF tokenizers' pipeline order: added tokens → normalizers → pre-tokenizers → BPE per
// pre-token (with a word cache), and decoding its decoders (ByteLevel, or ▁ → ' ' + byte fallback + Strip).
#include "tokenizer/bpe_tokenizer.h"

#include <tuple>

#include "common/error.h"
#include "tokenizer/bpe_merge.h"
#include "tokenizer/utf8.h"

namespace stapo {

std::vector<int32_t> BpeTokenizer::encode_with_special_ranges(std::string_view text,
                                                              const SpecialRanges& special_ranges) const {
  utf8_validate(text, "input text");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  p_.added_matcher.split(
      text, special_ranges, [&](std::string_view segment, size_t offset) { encode_segment(segment, offset == 0, ids); },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

static void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

static bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// One HF Split over `piece`, appending the resulting pieces (views into the same text).
static void split_piece(std::string_view piece, const BpeTokenizer::Split& split,
                        std::vector<std::pair<size_t, size_t>>& matches, std::vector<std::string_view>& out) {
  split.regex->find_all(piece, matches);
  struct Part {
    size_t begin, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [begin, end] : matches) {
    if (begin > prev) parts.push_back({prev, begin, split.invert});
    parts.push_back({begin, end, !split.invert});
    prev = end;
  }
  if (prev < piece.size()) parts.push_back({prev, piece.size(), split.invert});
  auto emit = [&](size_t begin, size_t end) { out.push_back(piece.substr(begin, end - begin)); };
  switch (split.behavior) {
    case SplitBehavior::isolated:
      for (const Part& p : parts) emit(p.begin, p.end);
      break;
    case SplitBehavior::removed:
      for (const Part& p : parts)
        if (!p.match) emit(p.begin, p.end);
      break;
    case SplitBehavior::merged_with_previous:  // a delimiter joins the non-delimiter before it
      for (size_t i = 0; i < parts.size(); ++i) {
        if (!parts[i].match && i + 1 < parts.size() && parts[i + 1].match) {
          emit(parts[i].begin, parts[i + 1].end);
          ++i;
        } else {
          emit(parts[i].begin, parts[i].end);
        }
      }
      break;
    case SplitBehavior::merged_with_next:  // a delimiter joins the non-delimiter after it
      for (size_t i = 0; i < parts.size(); ++i) {
        if (parts[i].match && i + 1 < parts.size() && !parts[i + 1].match) {
          emit(parts[i].begin, parts[i + 1].end);
          ++i;
        } else {
          emit(parts[i].begin, parts[i].end);
        }
      }
      break;
    case SplitBehavior::contiguous:  // runs of delimiters become one piece
      for (size_t i = 0; i < parts.size(); ++i) {
        size_t begin = parts[i].begin, end = parts[i].end;
        while (parts[i].match && i + 1 < parts.size() && parts[i + 1].match) end = parts[++i].end;
        emit(begin, end);
      }
      break;
  }
}

// HF ByteLevel(add_prefix_space): every piece that does not start with ' ' gets one. The new pieces live in
// `storage`, reserved up front so that the views stay valid.
static void add_prefix_spaces(std::vector<std::string_view>& pieces, std::string& storage) {
  size_t total = 0;
  for (std::string_view piece : pieces) total += piece.size() + 1;
  storage.clear();
  storage.reserve(total);
  for (std::string_view& piece : pieces) {
    size_t begin = storage.size();
    if (!starts_with(piece, " ")) storage += ' ';
    storage.append(piece);
    piece = std::string_view(storage).substr(begin);
  }
}

void BpeTokenizer::encode_segment(std::string_view segment, bool at_text_start, std::vector<int32_t>& out) const {
  std::string buffer;
  std::string_view text = segment;
  if (!p_.normalizers.empty() || p_.metaspace) {
    buffer.assign(segment);
    for (const Normalizer& n : p_.normalizers) {
      if (n.prepend) {
        if (!buffer.empty()) buffer.insert(0, n.to);
      } else {
        replace_all(buffer, n.from, n.to);
      }
    }
    if (p_.metaspace) {
      replace_all(buffer, " ", p_.metaspace_replacement);
      bool prepend = p_.metaspace_prepend == PrependScheme::always ||
                     (p_.metaspace_prepend == PrependScheme::first && at_text_start);
      if (prepend && !starts_with(buffer, p_.metaspace_replacement)) buffer.insert(0, p_.metaspace_replacement);
    }
    text = buffer;
  }
  if (text.empty()) return;

  std::vector<std::string_view> pieces{text}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  std::string prefixed;
  for (size_t i = 0; i <= p_.splits.size(); ++i) {
    if (static_cast<int>(i) == p_.prefix_space_at) add_prefix_spaces(pieces, prefixed);
    if (i == p_.splits.size()) break;
    next.clear();
    for (std::string_view piece : pieces) split_piece(piece, p_.splits[i], matches, next);
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) encode_word(piece, out);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty() || cache_.lookup(word, out)) return;
  size_t first = out.size();
  auto whole = p_.ignore_merges ? p_.token_ids.find(std::string(word)) : p_.token_ids.end();
  if (whole != p_.token_ids.end()) {
    out.push_back(whole->second);
    cache_.store(word, &out[first], 1);
    return;
  }

  std::vector<BpeSymbol> symbols;
  symbols.reserve(word.size());
  auto push = [&](int32_t id, size_t start, size_t len) {
    int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, static_cast<int32_t>(start), static_cast<int32_t>(len), index - 1, index + 1});
  };
  if (p_.byte_level) {
    for (size_t i = 0; i < word.size(); ++i) {
      int32_t id = p_.byte_ids[static_cast<uint8_t>(word[i])];
      STAPO_CHECK(id >= 0, "the tokenizer's vocabulary has no token for byte 0x", std::hex,
                  static_cast<int>(static_cast<uint8_t>(word[i])), " (a byte-level vocabulary needs all 256)");
      push(id, i, 1);
    }
  } else {
    bool prev_unk = false;
    for (size_t i = 0; i < word.size();) {
      size_t len = utf8_char_length(word, i);
      auto it = p_.token_ids.find(std::string(word.substr(i, len)));
      bool bytes_known = p_.byte_fallback;
      for (size_t b = 0; b < len && bytes_known; ++b) bytes_known = p_.byte_ids[static_cast<uint8_t>(word[i + b])] >= 0;
      if (it != p_.token_ids.end()) {
        push(it->second, i, len);
        prev_unk = false;
      } else if (bytes_known) {
        for (size_t b = 0; b < len; ++b) push(p_.byte_ids[static_cast<uint8_t>(word[i + b])], i + b, 1);
        prev_unk = false;
      } else {
        STAPO_CHECK(p_.unk_id >= 0, "character \"", word.substr(i, len),
                    "\" is not in the vocabulary and the tokenizer has no unk token or byte fallback");
        if (prev_unk && p_.fuse_unk) {
          symbols.back().len += static_cast<int32_t>(len);
        } else {
          push(p_.unk_id, i, len);
        }
        prev_unk = true;
      }
      i += len;
    }
  }
  symbols.back().next = -1;
  bpe_merge(symbols, [&](const BpeSymbol& a, const BpeSymbol& b, double* priority, int32_t* merged) {
    auto it = p_.merges.find(static_cast<uint64_t>(a.id) << 32 | static_cast<uint32_t>(b.id));
    if (it == p_.merges.end()) return false;
    *priority = it->second.rank;
    *merged = it->second.merged;
    return true;
  });
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  cache_.store(word, &out[first], out.size() - first);
}

// Byte-level: all bytes joined, then one lossy UTF-8 pass (HF's ByteLevel decoder, tiktoken). SentencePiece-
// style: the space marker becomes ' ', and each run of <0xXX> tokens becomes its bytes, or, when they are not
// valid UTF-8, one U+FFFD per token (HF's ByteFallback decoder).
std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text, run;
  auto flush_run = [&] {
    if (utf8_make_valid(run) == run) {
      text += run;
    } else {
      for (size_t i = 0; i < run.size(); ++i) text += "\xEF\xBF\xBD";
    }
    run.clear();
  };
  for (int32_t id : ids) {
    STAPO_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is out of range (vocabulary size ", vocab_size(),
                ")");
    const std::string& token = p_.tokens[id];
    if (p_.byte_level) {
      text += token;
      continue;
    }
    int byte = p_.decode_byte_fallback && !p_.added[id] ? parse_byte_piece(token) : -1;
    if (byte >= 0 && p_.byte_ids[byte] == id) {
      run += static_cast<char>(byte);
      continue;
    }
    flush_run();
    if (p_.added[id]) {
      text += token;
    } else {
      std::string piece = token;
      replace_all(piece, p_.space_marker, " ");
      text += piece;
    }
  }
  flush_run();
  if (p_.decode_strips_space && starts_with(text, " ")) text.erase(0, 1);
  return p_.byte_level ? utf8_make_valid(text) : text;
}

std::optional<int32_t> BpeTokenizer::special_token_id(std::string_view text) const {
  auto it = p_.added_ids.find(std::string(text));
  if (it == p_.added_ids.end()) return std::nullopt;
  return it->second;
}

}  // namespace stapo
