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
#include <vector>

namespace stapo {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `path`: a tokenizer.json, a tokenizer.model (SentencePiece protobuf or tiktoken, told apart by content),
  // or a directory holding one of them (tokenizer.json preferred) and optionally tokenizer_config.json.
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  // Text to ids, without BOS/EOS. Special tokens written in `text` are plain text unless allow_special;
  // then every added/special token's literal text maps to its id. Invalid UTF-8 is a stapo::Error.
  virtual std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const = 0;
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
  // The chat_template string of tokenizer_config.json next to the tokenizer, or "" when none.
  virtual const std::string& chat_template_source() const = 0;
};

}  // namespace stapo
