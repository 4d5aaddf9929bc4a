// What the loaders share: tokenizer_config.json next to the tokenizer file, the content hash, and one
// loader per file format (each returns the Tokenizer for that file). Also the list of tokenizer files that
// travel with a model (checkpoints, model_convert).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace stapo {

// Larger ids or tokens are rejected as corrupt files (the largest real vocabularies have ~256k tokens).
constexpr int32_t kMaxVocabSize = 1 << 21;
constexpr size_t kMaxTokenBytes = 4096;

// Reads dir/tokenizer_config.json and dir/chat_template.jinja (which, as in transformers, takes the place of the
// config's chat_template); absent files give an empty config, a malformed one an error.
TokenizerConfig read_tokenizer_config(const std::string& dir);

// The files beside a model that define its tokenizer, chat template and generation stop ids: tokenizer.json,
// tokenizer.model, tokenizer_config.json, special_tokens_map.json, chat_template.jinja, generation_config.json.
extern const std::vector<std::string> kTokenizerFiles;
// Copies those of kTokenizerFiles that from_dir has into to_dir (replacing; nothing when both are the same
// folder) and returns their names. A failed copy is a stapo::Error naming the file.
std::vector<std::string> copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

// The id of `configured` when given, else of the first of `usual` the tokenizer knows; -1 when none.
extern const std::vector<std::string> kBosNames, kEosNames;  // <s>, <|begin_of_text|>; </s>, <|end_of_text|>, ...
int32_t find_bos_eos(const std::string& configured, const std::vector<std::string>& usual,
                     const std::unordered_map<std::string, int32_t>& ids);

// FNV-1a 64 of the bytes, as 16 hex digits: stable across machines and builds.
std::string content_hash(std::string_view bytes);

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, const std::string& contents,
                                                  const TokenizerConfig& config);
std::unique_ptr<Tokenizer> load_tiktoken(const std::string& path, const std::string& contents,
                                         const TokenizerConfig& config);
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const std::string& contents,
                                                    const TokenizerConfig& config);

}  // namespace stapo
