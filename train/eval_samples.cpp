// Eval samples (train/eval_samples.h).
#include "train/eval_samples.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/file_io.h"
#include "model/generate.h"       // defines: generate, SamplingOptions
#include "model/generate_chat.h"  // defines: chat_prompt_ids, reply_stop_ids

namespace stapo {

std::vector<std::string> read_sample_prompts(const std::string& path) {
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  std::istringstream lines(read_text_file(path));
  std::vector<std::string> prompts;
  std::string line;
  for (int64_t number = 1; std::getline(lines, line); number++) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!jsonl) {
      prompts.push_back(line);
      continue;
    }
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", number, ": not valid JSON (", e.what(), "); a .jsonl prompt file holds {\"prompt\": \"...\"} "
           "lines, any other name one plain-text prompt per line");
    }
    STAPO_CHECK(record.is_object() && record.contains("prompt") && record["prompt"].is_string(), path, ":", number,
                ": needs a string field \"prompt\"");
    prompts.push_back(record["prompt"]);
  }
  STAPO_CHECK(!prompts.empty(), path, ": no prompts");
  return prompts;
}

EvalSampler::EvalSampler(std::vector<std::string> prompts, const std::string& tokenizer_dir,
                         const std::string& template_name, int max_new_tokens)
    : prompts_(std::move(prompts)),
      tokenizer_(Tokenizer::load(tokenizer_dir)),
      chat_template_(ChatTemplate::by_name(template_name, *tokenizer_)),
      max_new_tokens_(max_new_tokens) {
  STAPO_CHECK(max_new_tokens >= 1, "--sample-tokens must be >= 1 (got ", max_new_tokens, ")");
  for (const std::string& prompt : prompts_)
    prompt_ids_.push_back(chat_prompt_ids(*tokenizer_, chat_template_, {{"user", prompt}}));
}

std::vector<EvalSample> EvalSampler::sample(const CpuModel<float>& model) const {
  STAPO_CHECK(tokenizer_->vocab_size() <= model.config().vocab_size, "eval samples: the tokenizer has ",
              tokenizer_->vocab_size(), " tokens but the model's vocab_size is ", model.config().vocab_size,
              ": they do not belong together");
  const std::vector<int32_t> stop_ids = reply_stop_ids(*tokenizer_, chat_template_, model.config());
  SamplingOptions greedy;
  greedy.max_new_tokens = max_new_tokens_;
  greedy.vocab_limit = tokenizer_->vocab_size();
  std::vector<EvalSample> out;
  for (size_t i = 0; i < prompts_.size(); i++) {
    const Generation g = generate(model, prompt_ids_[i], stop_ids, greedy);
    out.push_back({prompts_[i], tokenizer_->decode(g.ids), g.stopped});
  }
  return out;
}

}  // namespace stapo
