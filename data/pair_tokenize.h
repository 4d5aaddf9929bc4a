// One preference record → token ids through a chat template (docs/data-format.md):
//   prompt   = the rendered conversation up to and including the assistant header
//              (render(prompt, add_generation_prompt=true) → encode_pieces), with BOS prepended only when
//              the template does not render it and the tokenizer adds BOS by default: never two BOS
//   response = encode(content) + the template's end-of-turn token (the tokenizer's EOS for templates
//              without one); special-token text inside content stays plain text
// These are the ids a model sees at inference: the prompt as the template renders it, then what it generates.
#pragma once
#include <optional>

#include "data/preference_jsonl.h"  // defines: PreferenceRecord, LineProblem
#include "data/shard.h"             // defines: TokenizedPair
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace stapo {

class PairTokenizer {
 public:
  // Errors (naming the template and the token) when the end-of-turn token is not in the tokenizer.
  PairTokenizer(const Tokenizer& tokenizer, const ChatTemplate& chat_template);

  // Untruncated ids; a LineProblem when the prompt renders to no token at all (then the first response
  // token would have no position to be predicted from).
  std::optional<LineProblem> tokenize(const PreferenceRecord& record, TokenizedPair& out) const;
  // Whether a prompt's first token is the BOS (truncation keeps it).
  bool starts_with_bos(const std::vector<int32_t>& prompt) const {
    return bos_id_ >= 0 && !prompt.empty() && prompt[0] == bos_id_;
  }

 private:
  const Tokenizer& tokenizer_;
  const ChatTemplate& template_;
  int32_t bos_id_, end_of_turn_id_;
  bool add_bos_;
};

}  // namespace stapo
