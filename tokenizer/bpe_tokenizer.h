// The BPE tokenizer behind HF tokenizer.json (model.type BPE) and tiktoken files: added-token split,
// normalizers, pre-tokenizers, then BPE over each pre-token with merges keyed by token-id pairs.
// Two families share it:
//   byte-level (GPT-2, Llama 3, tiktoken): pre-tokens are raw bytes; vocab strings in GPT-2's byte-to-char
//     alphabet are stored here as the raw bytes they stand for, so no text is ever remapped while encoding;
//   SentencePiece-style (Llama 2 / Mistral tokenizer.json): Unicode characters, ▁ for spaces, byte fallback.
// Loaders (hf_tokenizer_json.cpp, tiktoken.cpp) fill a BpeTokenizer::Parts; see docs/tokenizer.md.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/token_matcher.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/word_cache.h"

namespace stapo {

enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };
enum class PrependScheme { always, first, never };

struct BpeMerge {
  int32_t rank;    // lower merges first
  int32_t merged;  // id of the merged token
};

class BpeTokenizer : public Tokenizer {
 public:
  struct Normalizer {  // HF Prepend (from empty) or Replace (literal `from` → `to`)
    std::string from, to;
    bool prepend = false;
  };
  struct Split {  // HF Split pre-tokenizer
    std::shared_ptr<Regex> regex;
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
  };
  struct Parts {
    std::vector<std::string> tokens;  // by id: raw bytes (byte-level) or text; added tokens' content
    std::vector<bool> added;          // by id: an added token (decoded as its literal content)
    std::unordered_map<std::string, int32_t> token_ids;  // model vocabulary (not added tokens)
    std::unordered_map<uint64_t, BpeMerge> merges;       // key: left id << 32 | right id
    std::unordered_map<std::string, int32_t> added_ids;  // added tokens by content
    TokenMatcher added_matcher;

    bool byte_level = false;     // pre-tokens are bytes; initial symbols via byte_ids
    bool ignore_merges = false;  // a pre-token already in the vocabulary is one token (Llama 3, tiktoken)
    bool byte_fallback = false;  // SentencePiece-style: unknown characters become <0xXX> tokens
    bool fuse_unk = false;
    int32_t unk_id = -1;
    int32_t byte_ids[256];  // byte-level: token of each byte; byte_fallback: id of <0xXX>; -1 if none

    std::vector<Normalizer> normalizers;
    std::vector<Split> splits;         // applied in order
    int prefix_space_at = -1;          // ByteLevel add_prefix_space: before splits[i], each piece gets a ' '
    bool metaspace = false;            // Metaspace pre-tokenizer
    std::string metaspace_replacement = "\xE2\x96\x81";  // ▁
    PrependScheme metaspace_prepend = PrependScheme::always;
    bool metaspace_split = false;
    std::string space_marker = "\xE2\x96\x81";  // SentencePiece-style decoding turns it into ' '
    bool decode_strips_space = false;           // decoder drops one leading space (Strip / Metaspace)
    bool decode_byte_fallback = false;          // ByteFallback decoder: <0xXX> runs become bytes

    int32_t bos_id = -1, eos_id = -1;
    bool adds_bos = false;
    std::string content_hash;
    Parts() { std::fill(byte_ids, byte_ids + 256, -1); }
  };

  explicit BpeTokenizer(Parts parts) : p_(std::move(parts)) {}

  std::vector<int32_t> encode_with_special_ranges(std::string_view text,
                                                  const SpecialRanges& special_ranges) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(p_.tokens.size()); }
  std::optional<int32_t> special_token_id(std::string_view text) const override;
  int32_t bos_id() const override { return p_.bos_id; }
  int32_t eos_id() const override { return p_.eos_id; }
  bool adds_bos_by_default() const override { return p_.adds_bos; }
  std::string content_hash() const override { return p_.content_hash; }

 private:
  void encode_segment(std::string_view segment, bool at_text_start, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  Parts p_;
  WordCache cache_;
};

}  // namespace stapo
