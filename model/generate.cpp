// Greedy and nucleus sampling over a KvDecoder (see generate.h).
#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "model/kv_cache.h"

namespace stapo {

int32_t sample_next(const float* logits, int V, const SamplingOptions& options, std::mt19937_64& rng) {
  if (options.temperature <= 0.0f) return (int32_t)(std::max_element(logits, logits + V) - logits);
  const float max_logit = *std::max_element(logits, logits + V);
  std::vector<double> prob(V);
  double total = 0;
  for (int v = 0; v < V; ++v) total += (prob[v] = std::exp((double)(logits[v] - max_logit) / options.temperature));
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; ties by id so the order (and the sample) does not depend on the sort.
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return prob[a] != prob[b] ? prob[a] > prob[b] : a < b; });
  size_t kept = 0;
  double kept_mass = 0;
  while (kept < order.size() && (kept == 0 || kept_mass < options.top_p * total)) kept_mass += prob[order[kept++]];
  const double u = (double)(rng() >> 11) * 0x1.0p-53 * kept_mass;  // uniform in [0, kept_mass)
  double cumulative = 0;
  for (size_t i = 0; i < kept; ++i)
    if (u < (cumulative += prob[order[i]])) return order[i];
  return order[kept - 1];  // u landed on the rounding gap at the end
}

namespace {

// log p(id) and the entropy of softmax(logits[0..V)), in double.
void distribution_stats(const float* logits, int V, int32_t id, float* logprob, float* entropy) {
  const float max_logit = *std::max_element(logits, logits + V);
  double sum = 0, weighted = 0;
  for (int v = 0; v < V; ++v) {
    const double x = double(logits[v] - max_logit), e = std::exp(x);
    sum += e;
    weighted += e * x;
  }
  const double log_sum = std::log(sum);
  *logprob = float(double(logits[id] - max_logit) - log_sum);
  *entropy = float(log_sum - weighted / sum);  // H = log Σe^x − Σ p·x (x relative to the max)
}

}  // namespace

Generation generate(const CpuModel<float>& model, const std::vector<int32_t>& prompt,
                    const std::vector<int32_t>& stop_ids, const SamplingOptions& options) {
  const ModelConfig& c = model.config();
  STAPO_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  STAPO_CHECK(options.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  STAPO_CHECK(options.top_p > 0.0f && options.top_p <= 1.0f, "generate: top_p must be in (0, 1], got ", options.top_p);
  const int needed = (int)prompt.size() + options.max_new_tokens;
  STAPO_CHECK(c.max_position_embeddings <= 0 || needed <= c.max_position_embeddings, "generate: ", prompt.size(),
              " prompt tokens + ", options.max_new_tokens, " new tokens exceed the model's max_position_embeddings (",
              c.max_position_embeddings, "); lower --max-new-tokens or shorten the prompt");
  const int drawable = options.vocab_limit > 0 ? std::min(options.vocab_limit, c.vocab_size) : c.vocab_size;
  KvDecoder<float> decoder(model, std::max(needed, 1));
  std::mt19937_64 rng(options.seed);
  const std::vector<float>* logits = nullptr;
  for (int32_t id : prompt) logits = &decoder.step(id);
  Generation out;
  for (int i = 0; i < options.max_new_tokens; ++i) {
    int32_t next = sample_next(logits->data(), drawable, options, rng);
    distribution_stats(logits->data(), drawable, next, &out.logprobs.emplace_back(), &out.entropies.emplace_back());
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      out.stopped = true;
      break;
    }
    out.ids.push_back(next);
    if (i + 1 < options.max_new_tokens) logits = &decoder.step(next);
  }
  return out;
}

}  // namespace stapo
