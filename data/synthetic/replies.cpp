// Replies to the synthetic task (data/synthetic/replies.h).
#include "data/synthetic/replies.h"

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "common/file_io.h"

#include "model/generate_chat.h"  // defines: chat_prompt_ids, reply_stop_ids

namespace stapo {

std::vector<SyntheticPrompt> read_synthetic_prompts(const std::string& path) {
  std::istringstream lines(read_text_file(path));
  std::vector<SyntheticPrompt> prompts;
  int line_number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_number, ": not valid JSON: ", e.what());
    }
    STAPO_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string(), path, ":", line_number,
                ": needs a string field \"prompt\"");
    const bool has_id = j.contains("id") && j["id"].is_string();
    prompts.push_back({has_id ? j["id"].get<std::string>() : cat("line-", line_number), j["prompt"].get<std::string>()});
  }
  STAPO_CHECK(!prompts.empty(), path, " has no prompts");
  return prompts;
}

SyntheticResponder::SyntheticResponder(const std::string& model_dir, const std::string& tokenizer_path,
                                       const std::string& template_name)
    : model_(model_load_hf<float>(model_dir)),
      tokenizer_(Tokenizer::load(tokenizer_path.empty() ? model_dir : tokenizer_path)),
      chat_template_(ChatTemplate::by_name(template_name, *tokenizer_)),
      stop_ids_(reply_stop_ids(*tokenizer_, chat_template_, model_->config())) {}

SyntheticReply SyntheticResponder::reply(const std::string& prompt, SamplingOptions options) const {
  options.vocab_limit = tokenizer_->vocab_size();
  SyntheticReply r;
  r.generation = generate(*model_, chat_prompt_ids(*tokenizer_, chat_template_, {{"user", prompt}}), stop_ids_, options);
  r.text = tokenizer_->decode(r.generation.ids);
  r.score = synthetic_score(prompt, r.text, r.generation.stopped);
  return r;
}

uint64_t synthetic_reply_seed(uint64_t seed, int64_t prompt, int sample) {
  SyntheticRng rng(seed ^ (uint64_t(prompt) * 0x9E3779B97F4A7C15ull) ^ (uint64_t(sample) << 48));
  return rng.next();
}

void ReplyStats::add(const SyntheticReply& r) {
  replies++;
  correct += r.score.correct;
  degenerate += r.score.degenerate;
  tokens += int64_t(r.generation.ids.size());
  steps += int64_t(r.generation.entropies.size());
  for (float h : r.generation.entropies) entropy_sum += h;
}

void ReplyStats::add_group(const std::vector<SyntheticReply>& group) {
  std::set<std::pair<int32_t, int32_t>> seen;
  for (const SyntheticReply& r : group) {
    add(r);
    const std::vector<int32_t>& ids = r.generation.ids;
    for (size_t i = 1; i < ids.size(); i++) {
      bigrams++;
      seen.insert({ids[i - 1], ids[i]});
    }
  }
  distinct_bigrams += int64_t(seen.size());
}

double reply_delta(const SyntheticReply& chosen, const SyntheticReply& rejected) {
  auto mean = [](const std::vector<float>& v) {
    double sum = 0;
    for (float x : v) sum += x;
    return v.empty() ? 0.0 : sum / double(v.size());
  };
  return mean(chosen.generation.logprobs) - mean(rejected.generation.logprobs);
}

}  // namespace stapo
