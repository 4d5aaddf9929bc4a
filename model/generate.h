// Sampling from the CPU reference with a KV cache (model/kv_cache.h): greedy at temperature 0, otherwise
// softmax(logits / temperature) restricted to the smallest set of most likely tokens whose probability
// reaches top_p (nucleus sampling). Generation stops at a stop id (EOS, end of turn), which is not returned,
// or after max_new_tokens. A seed makes sampling repeatable (std::mt19937_64 is specified by the standard;
// the uniform draw is our own, so no library distribution is involved).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "model/model.h"  // defines: CpuModel

namespace stapo {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // in (0, 1]
  int max_new_tokens = 64;
  uint64_t seed = 0;
  int vocab_limit = 0;  // > 0: only ids below it are drawn (the tokenizer's size, when the model's vocabulary
                        // is padded past it: no token maps to the extra rows)
};

struct Generation {
  std::vector<int32_t> ids;  // generated ids, without the stop id
  bool stopped = false;      // true when a stop id ended it, false when max_new_tokens did
  // Per drawn id (the ids, then the stop id when stopped), under the model's own next-token distribution
  // (softmax of the logits at temperature 1, over the drawable ids): log p of the drawn id, and the entropy.
  std::vector<float> logprobs, entropies;
};

// The next id given logits (V): the first maximum at temperature 0, else a nucleus sample.
int32_t sample_next(const float* logits, int V, const SamplingOptions& options, std::mt19937_64& rng);

// Continues `prompt` (non-empty; prompt + max_new_tokens must fit max_position_embeddings when the
// config sets it). Draws from the first min(vocab_size, vocab_limit) logits.
Generation generate(const CpuModel<float>& model, const std::vector<int32_t>& prompt,
                    const std::vector<int32_t>& stop_ids, const SamplingOptions& options);

}  // namespace stapo
