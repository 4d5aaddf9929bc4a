// A tiny byte-level BPE tokenizer for the synthetic task, trained by our own code and written in the
// Hugging Face tokenizer.json format (GPT-2 style: ByteLevel pre-tokenizer and decoder), so that both
// stapo::Tokenizer::load and HF `tokenizers` load it.
//
// Vocabulary: ids 0..255 are the 256 bytes (GPT-2's byte→character map), then one token per merge, then
// the chatml special tokens <|endoftext|> <|im_start|> <|im_end|>. Merges are learned only inside runs of
// ASCII letters (the template's role names and the task words "sort", "reverse"), so digits and symbols
// stay one token each: every answer is spelled digit by digit.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace stapo {

struct ByteLevelBpe {
  std::vector<std::string> tokens;                          // id → token text in byte-level characters
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<std::string> special_tokens;                  // ids tokens.size(), tokens.size()+1, ...
};

// Learns up to max_merges merges from the letter runs of `texts` (a merge needs a pair seen twice).
ByteLevelBpe bpe_train_letter_runs(const std::vector<std::string>& texts, int max_merges);

// tokenizer.json text of the vocabulary (no BOS is added; <|im_end|> ends a turn).
std::string bpe_tokenizer_json(const ByteLevelBpe& bpe);
// tokenizer_config.json text: eos <|im_end|>, pad <|endoftext|>, no BOS, the chatml chat_template.
std::string bpe_tokenizer_config_json();

}  // namespace stapo
