// A model's replies to the synthetic task's prompts (data/synthetic/task.h), scored and measured: what
// eval_synthetic reports (task accuracy, degeneration, the entropy of the model's own replies, their length
// and diversity) and what sample_pairs turns into on-policy preference pairs.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/synthetic/task.h"      // defines: SyntheticScore
#include "model/generate.h"           // defines: Generation, SamplingOptions
#include "model/model.h"              // defines: CpuModel
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

namespace stapo {

struct SyntheticReply {
  std::string text;       // the decoded reply, without the stop token
  Generation generation;  // ids, whether the model ended its turn, per drawn id: log-prob and entropy
  SyntheticScore score;
};

struct SyntheticPrompt {
  std::string id;  // the line's "id", else "line-N"
  std::string prompt;
};
// The prompts of a JSONL file with a string "prompt" per line (make_synthetic_data's train.jsonl, eval.jsonl or
// eval_prompts.jsonl); a bad line is an error naming it.
std::vector<SyntheticPrompt> read_synthetic_prompts(const std::string& path);

// A checkpoint and its tokenizer, ready to answer prompts as a user turn of `template_name`.
class SyntheticResponder {
 public:
  SyntheticResponder(const std::string& model_dir, const std::string& tokenizer_path,
                     const std::string& template_name);
  // One reply; options.vocab_limit is set to the tokenizer's size.
  SyntheticReply reply(const std::string& prompt, SamplingOptions options) const;

 private:
  std::unique_ptr<CpuModel<float>> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ChatTemplate chat_template_;
  std::vector<int32_t> stop_ids_;
};

// The seed of sample `sample` of prompt `prompt` under a run seed: each reply has its own stream, so the
// replies do not depend on the order or the threads that draw them.
uint64_t synthetic_reply_seed(uint64_t seed, int64_t prompt, int sample);

// Sums over replies, turned into means by the accessors.
struct ReplyStats {
  int64_t replies = 0, correct = 0, degenerate = 0;
  int64_t tokens = 0;       // generated ids, stop ids excluded
  int64_t steps = 0;        // drawn ids, stop ids included: what the entropy is averaged over
  double entropy_sum = 0;   // Σ over drawn ids of the model's next-token entropy
  int64_t bigrams = 0, distinct_bigrams = 0;  // over each prompt's group of replies (add_group)

  void add(const SyntheticReply& reply);
  // The replies of one prompt: distinct-2 counts the distinct id bigrams within the group.
  void add_group(const std::vector<SyntheticReply>& replies);
  double accuracy() const { return replies ? double(correct) / replies : 0.0; }
  double degeneration() const { return replies ? double(degenerate) / replies : 0.0; }
  double mean_entropy() const { return steps ? entropy_sum / steps : 0.0; }  // per drawn token
  double mean_length() const { return replies ? double(tokens) / replies : 0.0; }
  double distinct_2() const { return bigrams ? double(distinct_bigrams) / bigrams : 0.0; }
};

// Δ of a pair of replies in the avg reward: the mean log-prob per drawn id (stop id included) of the chosen
// reply minus the rejected one's, under the model that sampled them.
double reply_delta(const SyntheticReply& chosen, const SyntheticReply& rejected);

}  // namespace stapo
