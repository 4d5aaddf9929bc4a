// Byte-level BPE training on letter runs, and the tokenizer.json / tokenizer_config.json writers.
#include "data/synthetic/tokenizer_builder.h"

#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/byte_level.h"

namespace stapo {

static const std::string& byte_character(char c) { return byte_level_character(static_cast<uint8_t>(c)); }

static bool ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// The letter runs of text with their frequencies; a run keeps the one space before it, as the GPT-2
// pre-tokenizer's " ?\p{L}+" does.
static std::map<std::vector<std::string>, int64_t> letter_run_counts(const std::vector<std::string>& texts) {
  std::map<std::vector<std::string>, int64_t> counts;
  for (const std::string& text : texts) {
    for (size_t i = 0; i < text.size();) {
      if (!ascii_letter(text[i])) {
        ++i;
        continue;
      }
      std::vector<std::string> word;
      if (i > 0 && text[i - 1] == ' ') word.push_back(byte_character(' '));
      for (; i < text.size() && ascii_letter(text[i]); ++i) word.push_back(byte_character(text[i]));
      ++counts[word];
    }
  }
  return counts;
}

ByteLevelBpe bpe_train_letter_runs(const std::vector<std::string>& texts, int max_merges) {
  ByteLevelBpe bpe;
  for (int byte = 0; byte < 256; ++byte) bpe.tokens.push_back(byte_level_character(static_cast<uint8_t>(byte)));
  auto words = letter_run_counts(texts);
  for (int m = 0; m < max_merges; ++m) {
    std::map<std::pair<std::string, std::string>, int64_t> pair_counts;
    for (const auto& [word, count] : words)
      for (size_t i = 0; i + 1 < word.size(); ++i) pair_counts[{word[i], word[i + 1]}] += count;
    // The most frequent pair; ties go to the first in (left, right) order, so training is deterministic.
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 1;
    for (const auto& [pair, count] : pair_counts)
      if (count > best_count) best = &pair, best_count = count;
    if (!best) break;
    auto merge = *best;
    bpe.merges.push_back(merge);
    bpe.tokens.push_back(merge.first + merge.second);
    std::map<std::vector<std::string>, int64_t> merged;
    for (const auto& [word, count] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == merge.first && word[i + 1] == merge.second) {
          out.push_back(merge.first + merge.second);
          ++i;
        } else {
          out.push_back(word[i]);
        }
      }
      merged[out] += count;
    }
    words = std::move(merged);
  }
  bpe.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  return bpe;
}

std::string bpe_tokenizer_json(const ByteLevelBpe& bpe) {
  using nlohmann::json;
  json vocab = json::object();
  for (size_t id = 0; id < bpe.tokens.size(); ++id) {
    STAPO_CHECK(!vocab.contains(bpe.tokens[id]), "tokenizer builder: token '", bpe.tokens[id], "' appears twice");
    vocab[bpe.tokens[id]] = id;
  }
  json merges = json::array();
  for (const auto& [left, right] : bpe.merges) merges.push_back(left + " " + right);
  json added = json::array();
  for (size_t i = 0; i < bpe.special_tokens.size(); ++i)
    added.push_back({{"id", bpe.tokens.size() + i},
                     {"content", bpe.special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json tokenizer = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", byte_level},
                    {"post_processor", nullptr},
                    {"decoder", byte_level},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"vocab", vocab},
                      {"merges", merges}}}};
  return tokenizer.dump(1) + "\n";
}

std::string bpe_tokenizer_config_json() {
  // ChatML, as Qwen and others write it.
  const char* chatml =
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  nlohmann::json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                           {"bos_token", nullptr},
                           {"eos_token", "<|im_end|>"},
                           {"pad_token", "<|endoftext|>"},
                           {"add_bos_token", false},
                           {"model_max_length", 256},
                           {"chat_template", chatml}};
  return config.dump(1) + "\n";
}

}  // namespace stapo
