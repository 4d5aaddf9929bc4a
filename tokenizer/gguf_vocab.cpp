// GGUF vocabulary → tokenizer.json + tokenizer_config.json (tokenizer/gguf_vocab.h), following the steps
// transformers takes for a "gpt2" GGUF tokenizer:
//   vocabulary: each token as spelled when every character is in the byte-level alphabet, else re-spelled from
//     its UTF-8 bytes (a later token with the same spelling takes the key, as in a Python dict);
//   merges: the file's, in rank order; BPE without subword prefix/suffix, ByteLevel decoder;
//   pre-tokenizer: ByteLevel with GPT-2's regex, or, for the names of `kSplits`, that split regex then ByteLevel
//     without its own regex (tokenizer.ggml.pre names it; an unknown name falls back to GPT-2's, as there);
//   added tokens: control tokens (type 3) spelled in the alphabet as special tokens, user-defined ones (type 4)
//     found in the vocabulary as plain added tokens;
//   BOS/EOS in TemplateProcessing when add_bos/add_eos say so.
#include "tokenizer/gguf_vocab.h"

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace stapo {

using json = nlohmann::ordered_json;

namespace {

// Llama 3's pre-tokenizer regex (Meta's tokenizer, also tokenizer/tiktoken.cpp).
const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Mistral's Tekken (Mistral NeMo, Pixtral), as transformers writes it for tokenizer.ggml.pre "tekken".
const char* kTekkenSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?)"
    R"([\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// tokenizer.ggml.pre names whose split transformers applies before ByteLevel.
const std::map<std::string, const char*> kSplits = {
    {"llama3", kLlama3Split},    {"llama-v3", kLlama3Split},  {"llama-bpe", kLlama3Split}, {"falcon3", kLlama3Split},
    {"falcon-h1", kLlama3Split}, {"pixtral", kLlama3Split},   {"midm-2.0", kLlama3Split},  {"lfm2", kLlama3Split},
    {"jina-v5-nano", kLlama3Split}, {"dbrx", kLlama3Split},   {"smaug-bpe", kLlama3Split}, {"tekken", kTekkenSplit}};
// Names transformers maps to splits of other model families (Qwen, GPT-4o): not written here, refused.
const std::set<std::string> kOtherSplits = {"qwen2",  "deepseek-r1-qwen", "kormo",   "f2llmv2", "megrez",    "qwen35",
                                            "gpt-4o", "llama4",           "kanana2", "talkie",  "minimax-m2"};

enum TokenType : int64_t { kControl = 3, kUserDefined = 4 };

bool in_byte_alphabet(const std::string& token) {
  for (size_t i = 0; i < token.size();) {
    const size_t len = utf8_char_length(token, i);
    if (len == 0 || byte_level_byte(utf8_decode(token, i, len)) < 0) return false;
    i += len;
  }
  return true;
}

std::string byte_level_spelling(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) out += byte_level_character(b);
  return out;
}

json byte_level_step(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

}  // namespace

TokenizerFilesText gguf_vocab_tokenizer_files(const GgufVocab& v, const std::string& where) {
  STAPO_CHECK(v.model == "gpt2", where, ": tokenizer.ggml.model is ", v.model.empty() ? "absent" : "\"" + v.model + "\"",
              "; only \"gpt2\" (byte-level BPE) can be rebuilt. Convert with --no-tokenizer and copy "
              "tokenizer.json and tokenizer_config.json from the model's original repository");
  STAPO_CHECK(!v.tokens.empty(), where, ": tokenizer.ggml.tokens is empty");
  STAPO_CHECK(v.token_types.empty() || v.token_types.size() == v.tokens.size(), where, ": tokenizer.ggml.token_type has ",
              v.token_types.size(), " entries but there are ", v.tokens.size(), " tokens");
  STAPO_CHECK(!v.merges.empty(), where, ": tokenizer.ggml.merges is missing or empty; a byte-level BPE needs merges");
  STAPO_CHECK(!kOtherSplits.count(v.pre), where, ": tokenizer.ggml.pre \"", v.pre,
              "\" names another model family's pre-tokenizer, which is not supported");
  STAPO_CHECK(!v.add_eos.value_or(false), where, ": tokenizer.ggml.add_eos_token is true; appending EOS is not "
              "supported by our tokenizer");
  auto token_at = [&](int64_t id, const char* what) -> json {
    if (id < 0) return nullptr;
    STAPO_CHECK(id < int64_t(v.tokens.size()), where, ": tokenizer.ggml.", what, " is ", id, " but there are only ",
                v.tokens.size(), " tokens");
    return v.tokens[id];
  };

  json vocab = json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const std::string& t = v.tokens[id];
    utf8_validate(t, cat(where, ": tokenizer.ggml.tokens[", id, "]").c_str());
    vocab[in_byte_alphabet(t) ? t : byte_level_spelling(t)] = id;
  }
  json merges = json::array();
  for (size_t rank = 0; rank < v.merges.size(); ++rank) {
    const std::string& m = v.merges[rank];
    utf8_validate(m, cat(where, ": tokenizer.ggml.merges[", rank, "]").c_str());
    const size_t space = m.find(' ');
    STAPO_CHECK(space != std::string::npos && m.find(' ', space + 1) == std::string::npos, where,
                ": tokenizer.ggml.merges[", rank, "] \"", m, "\" is not two tokens separated by one space");
    merges.push_back({m.substr(0, space), m.substr(space + 1)});
  }

  std::map<int64_t, json> added;  // by id, as tokenizers writes them
  for (size_t id = 0; id < v.token_types.size(); ++id) {
    const std::string& t = v.tokens[id];
    const bool special = v.token_types[id] == kControl && in_byte_alphabet(t);
    const bool user = v.token_types[id] == kUserDefined && vocab.contains(t);
    if (!special && !user) continue;
    const int64_t token_id = vocab.contains(t) ? vocab[t].get<int64_t>() : int64_t(id);
    added[token_id] = {{"id", token_id},          {"content", t},           {"single_word", false}, {"lstrip", false},
                       {"rstrip", false},         {"normalized", false},    {"special", special}};
  }
  json added_tokens = json::array();
  for (auto& [id, token] : added) added_tokens.push_back(token);

  json pre_tokenizer = byte_level_step(true);
  if (auto it = kSplits.find(v.pre); it != kSplits.end())
    pre_tokenizer = {{"type", "Sequence"},
                     {"pretokenizers",
                      {{{"type", "Split"}, {"pattern", {{"Regex", it->second}}}, {"behavior", "Isolated"},
                        {"invert", false}},
                       byte_level_step(false)}}};

  const bool add_bos = v.add_bos.value_or(false);
  const json bos = token_at(v.bos_id, "bos_token_id");
  STAPO_CHECK(!add_bos || !bos.is_null(), where, ": tokenizer.ggml.add_bos_token is true but there is no bos_token_id");
  auto sequence = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  json single = json::array(), pair = json::array(), specials = json::object();
  if (add_bos) {
    const json bos_step = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
    single.push_back(bos_step);
    pair.push_back(bos_step);
    specials[bos.get<std::string>()] = {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}};
  }
  single.push_back(sequence("A", 0));
  pair.push_back(sequence("A", 0));
  if (add_bos) pair.push_back({{"SpecialToken", {{"id", bos}, {"type_id", 1}}}});
  pair.push_back(sequence("B", 1));

  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer},
      {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", merges}}}};

  json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false}};
  config["add_bos_token"] = add_bos;
  config["add_eos_token"] = false;
  config["bos_token"] = bos;
  config["eos_token"] = token_at(v.eos_id, "eos_token_id");
  config["unk_token"] = token_at(v.unk_id, "unknown_token_id");
  config["pad_token"] = token_at(v.pad_id, "padding_token_id");
  if (!v.chat_template.empty()) config["chat_template"] = v.chat_template;
  return {tokenizer.dump(2, ' ', false, json::error_handler_t::strict) + "\n", config.dump(2) + "\n"};
}

}  // namespace stapo
