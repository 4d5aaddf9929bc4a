// A GGUF file's tokenizer (its `tokenizer.ggml.*` and `tokenizer.chat_template` metadata) written back as the
// tokenizer.json + tokenizer_config.json transformers builds from the same file (transformers 5.24,
// integrations/gguf/gguf_tokenizer_mapping.py), so that our tokenizer and transformers' give the same ids.
// Supported: `tokenizer.ggml.model` "gpt2" (byte-level BPE with merges). Other models (sentencepiece "llama",
// ...) are an error naming the key; the caller can convert the weights alone and take the tokenizer files
// from the original HF repository.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace stapo {

struct GgufVocab {
  std::string model;                 // tokenizer.ggml.model
  std::string pre;                   // tokenizer.ggml.pre ("" when absent): the pre-tokenizer's name
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens, by id
  std::vector<int64_t> token_types;  // tokenizer.ggml.token_type (1 normal, 3 control, 4 user-defined, ...)
  std::vector<std::string> merges;   // tokenizer.ggml.merges, "left right", by rank
  int64_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  // -1: absent
  std::optional<bool> add_bos, add_eos;  // tokenizer.ggml.add_{bos,eos}_token
  std::string chat_template;             // tokenizer.chat_template ("" when absent)
};

struct TokenizerFilesText {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};

// The two files' text; `where` (the GGUF path) names the source in errors.
TokenizerFilesText gguf_vocab_tokenizer_files(const GgufVocab& vocab, const std::string& where);

}  // namespace stapo
