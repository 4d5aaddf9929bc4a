// libFuzzer target for the tokenizer: the three file loaders (tokenizer.json, SentencePiece .model, tiktoken)
// and the Jinja chat-template interpreter on arbitrary bytes, and encode/decode on arbitrary text and ids with the
// committed fixture tokenizers.
// The only acceptable failure is a stapo::Error; crashes, leaks, ASan reports and hangs are bugs.
// Built and run by dev/fuzz/run.sh (see docs/tokenizer.md).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"             // defines: Error
#include "tokenizer/jinja.h"         // defines: jinja::Template
#include "tokenizer/tokenizer.h"      // defines: Tokenizer
#include "tokenizer/tokenizer_files.h"  // defines: load_hf_tokenizer_json, load_sentencepiece_model, load_tiktoken

#ifndef STAPO_SOURCE_DIR
#error "build with -DSTAPO_SOURCE_DIR=\"...\" (dev/fuzz/run.sh does)"
#endif

static const std::vector<std::unique_ptr<stapo::Tokenizer>>& fixture_tokenizers() {
  static const auto tokenizers = [] {
    std::vector<std::unique_ptr<stapo::Tokenizer>> list;
    for (const char* name : {"bl_llama3", "bl_gpt2", "sp_legacy", "sp_metaspace", "sp_model", "sp_model_clean",
                             "tiktoken"})
      list.push_back(stapo::Tokenizer::load(std::string(STAPO_SOURCE_DIR) + "/tests/fixtures/tokenizer/" + name));
    return list;
  }();
  return tokenizers;
}

// Exercises a tokenizer on `text`: encode (both ways), decode of the ids, decode of raw ids from the bytes.
static void exercise(const stapo::Tokenizer& tok, const std::string& text) {
  try {
    for (bool allow_special : {false, true}) tok.decode(tok.encode(text, allow_special));
  } catch (const stapo::Error&) {
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 2 <= text.size(); i += 2)
    ids.push_back((static_cast<uint8_t>(text[i]) << 8 | static_cast<uint8_t>(text[i + 1])) %
                  (tok.vocab_size() + 2) - 1);
  try {
    tok.decode(ids);
  } catch (const stapo::Error&) {
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const stapo::TokenizerConfig config;
  std::unique_ptr<stapo::Tokenizer> loaded;
  try {
    switch (data[0] % 5) {
      case 0: loaded = stapo::load_hf_tokenizer_json("fuzz.json", body, config); break;
      case 1: loaded = stapo::load_sentencepiece_model("fuzz.model", body, config); break;
      case 2: loaded = stapo::load_tiktoken("fuzz.tiktoken", body, config); break;
      case 3: {  // a chat template: parse, then render a short conversation
        using stapo::jinja::Value;
        stapo::jinja::Template t(body, "fuzz.jinja");
        t.render({{"messages", Value::from_list({Value::from_dict({{"role", Value::from_text("user", true)},
                                                                   {"content", Value::from_text("Hi <s>", true)}})})},
                  {"bos_token", Value::from_text("<s>")},
                  {"add_generation_prompt", Value::from_bool(true)}});
        return 0;
      }
      default:
        for (const auto& tok : fixture_tokenizers()) exercise(*tok, body);
        return 0;
    }
  } catch (const stapo::Error&) {
    return 0;
  }
  exercise(*loaded, "Hello world! 123 café 東京 🤖 <s> <|eot_id|>  \n\t x");
  return 0;
}
