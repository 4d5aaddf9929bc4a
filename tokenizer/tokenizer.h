// Tokenizers users bring with their checkpoints, behind one interface:
//   - HF tokenizer.json, model.type BPE: byte-level (GPT-2 / Llama 3) and SentencePiece-style (Llama 2 / Mistral)
//   - SentencePiece tokenizer.model (ModelProto, BPE)
//   - tiktoken BPE files (Llama 3's tokenizer.model: base64 token + rank per line)
// encode() gives exactly the ids the reference library gives for the same text (see docs/tokenizer.md).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stapo {

// What the files beside the tokenizer say (tokenizer_config.json, chat_template.jinja): the chat template, the
// special-token strings a template sees, and HF's add-BOS switch.
struct TokenizerConfig {
  std::string chat_template;         // the Jinja source, "" when none
  std::string chat_template_origin;  // the file it came from (template errors name it)
  std::string bos_token, eos_token, unk_token, pad_token;  // "" when absent
  std::optional<bool> add_bos_token;
};

// Byte ranges [begin, end) of a text, sorted and disjoint.
using SpecialRanges = std::vector<std::pair<size_t, size_t>>;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `path`: a tokenizer.json, a tokenizer.model (SentencePiece protobuf or tiktoken, told apart by content),
  // or a directory holding one of them (tokenizer.json preferred) and optionally tokenizer_config.json.
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  // Text to ids, without BOS/EOS. Special tokens written in `text` are plain text unless allow_special;
  // then every added/special token's literal text maps to its id. Invalid UTF-8 is a stapo::Error.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const {
    return encode_with_special_ranges(text, allow_special ? SpecialRanges{{0, text.size()}} : SpecialRanges{});
  }
  // The same, with special tokens recognised only where they lie wholly inside one of `special_ranges` (plain
  // text elsewhere): a rendered chat template, whose own markup is in the ranges and message contents are not.
  // The text is encoded as one string (as HF does), so only where specials are looked for differs.
  virtual std::vector<int32_t> encode_with_special_ranges(std::string_view text,
                                                          const SpecialRanges& special_ranges) const = 0;
  // Ids to text; decode(encode(s)) == s for valid UTF-8 s. An id out of range is a stapo::Error.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  virtual int32_t vocab_size() const = 0;
  // Id of a special/added token by its text ("<|eot_id|>", "</s>"), or nullopt.
  virtual std::optional<int32_t> special_token_id(std::string_view text) const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t eos_id() const = 0;  // -1 when the tokenizer has none
  // Whether the reference library prepends BOS by default (HF post-processor / sentencepiece add_bos).
  virtual bool adds_bos_by_default() const = 0;
  // Stable hash of the files defining the vocabulary, stored in data shards to catch a mismatched tokenizer.
  virtual std::string content_hash() const = 0;
  // tokenizer_config.json and chat_template.jinja beside the tokenizer file (empty when loaded otherwise).
  const TokenizerConfig& config() const { return config_; }

 private:
  TokenizerConfig config_;  // set by load()
};

}  // namespace stapo
