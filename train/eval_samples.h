// Eval samples (as llm.c prints samples): at every evaluation the trainer greedily continues a few fixed user
// messages with the CURRENT weights, prints the replies on stderr and logs them in log.jsonl as
//   {"step": N, "samples": [{"prompt": "...", "reply": "...", "stopped": true}, ...]}
// Decoding is model/generate.h's (KV cache, fp32 CPU reference) on Engine::weights_to_cpu(), the prompt and
// stop ids model/generate_chat.h's: a reply is what ./generate --temperature 0 prints for that checkpoint.
// The prompt file: FILE.jsonl holds one JSON object per line with a string field "prompt" (make_synthetic_data's
// eval_prompts.jsonl); any other file holds one plain-text user message per line. Blank lines are skipped.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"              // defines: CpuModel
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

namespace stapo {

std::vector<std::string> read_sample_prompts(const std::string& path);

struct EvalSample {
  std::string prompt, reply;
  bool stopped = false;  // false: max_new_tokens cut the reply
};

class EvalSampler {
 public:
  // tokenizer_dir: tokenizer.json (+ tokenizer_config.json for template "auto"); template_name as ChatTemplate.
  EvalSampler(std::vector<std::string> prompts, const std::string& tokenizer_dir, const std::string& template_name,
              int max_new_tokens);
  std::vector<EvalSample> sample(const CpuModel<float>& model) const;  // greedy, in prompt order

 private:
  std::vector<std::string> prompts_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ChatTemplate chat_template_;
  std::vector<std::vector<int32_t>> prompt_ids_;
  int max_new_tokens_;
};

}  // namespace stapo
