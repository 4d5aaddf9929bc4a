// Generation (model/kv_cache.h, model/generate.h): the KV-cached decoder gives the logits of recomputing the
// full forward at every step (Llama with llama3 RoPE and GQA; Mistral with a sliding window and tied
// embeddings), greedy generation equals argmax over full recomputation, transformers' own greedy generate()
// on the model fixtures is reproduced, and sampling follows softmax/top-p with repeatable seeds.
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "model/kv_cache.h"
#include "tests/model/model_test_util.h"  // defines: tiny_config
#include "tests/test_util.h"

namespace stapo {
namespace {

ModelConfig generation_config(const std::string& model_type) {
  ModelConfig c = test::tiny_config(model_type);
  c.vocab_size = 37;  // more than the model tests' 11, so greedy paths do not collapse at once
  return c;
}

template <typename T>
std::unique_ptr<CpuModel<T>> random_model(const ModelConfig& config, uint64_t salt) {
  auto model = std::make_unique<CpuModel<T>>(config);
  // Weights far from HF's 0.02 so the logits are spread out and the argmax is decided by a wide margin.
  model_init_random(*model, test::seed_from_test_name(salt), 0.4f);
  return model;
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t salt) {
  std::vector<float> u = test::random_uniform(n, 0.0f, (float)V, salt);
  return std::vector<int32_t>(u.begin(), u.end());
}

// The full forward's logits at the last position of `tokens` (one row, positions 0..n-1).
template <typename T>
std::vector<T> last_logits(CpuModel<T>& model, const std::vector<int32_t>& tokens) {
  const int n = (int)tokens.size(), V = model.config().vocab_size;
  TokenBatch b;
  b.rows = 1;
  b.T = n;
  b.tokens = tokens;
  b.targets.assign(n, -1);
  b.segments.assign(n, 0);
  for (int i = 0; i < n; ++i) b.positions.push_back(i);
  std::vector<T> all = model.logits(b);
  return std::vector<T>(all.end() - V, all.end());
}

template <typename T>
void check_cache_matches_full_forward(const std::string& model_type, double tolerance) {
  ModelConfig config = generation_config(model_type);
  auto model = random_model<T>(config, 1);
  std::vector<int32_t> tokens = random_tokens(config.max_position_embeddings, config.vocab_size, 2);
  KvDecoder<T> decoder(*model, (int)tokens.size());
  double worst = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    std::vector<T> cached = decoder.step(tokens[t]);
    std::vector<T> full = last_logits(*model, std::vector<int32_t>(tokens.begin(), tokens.begin() + t + 1));
    double err = test::relative_error(cached.data(), full.data(), full.size());
    worst = std::max(worst, err);
    ASSERT_LE(err, tolerance) << model_type << " position " << t;
  }
  EXPECT_EQ(decoder.position(), (int)tokens.size());
  EXPECT_THROW(decoder.step(0), Error);  // the cache is full
  printf("[ kv cache ] %s %s: %zu positions, worst relative error vs full forward %.2e\n", model_type.c_str(),
         sizeof(T) == 8 ? "double" : "float", tokens.size(), worst);
}

TEST(KvDecoder, LlamaMatchesFullForwardDouble) { check_cache_matches_full_forward<double>("llama", 1e-12); }
TEST(KvDecoder, MistralWindowMatchesFullForwardDouble) { check_cache_matches_full_forward<double>("mistral", 1e-12); }
TEST(KvDecoder, LlamaMatchesFullForwardFloat) { check_cache_matches_full_forward<float>("llama", 1e-5); }
TEST(KvDecoder, MistralWindowMatchesFullForwardFloat) { check_cache_matches_full_forward<float>("mistral", 1e-5); }

TEST(KvDecoder, RejectsTokenOutsideVocabulary) {
  auto model = random_model<float>(generation_config("llama"), 1);
  KvDecoder<float> decoder(*model, 4);
  EXPECT_THROW(decoder.step(-1), Error);
  EXPECT_THROW(decoder.step(model->config().vocab_size), Error);
}

// Greedy decoding by recomputing the whole sequence's forward at every step: what generate() must equal.
std::vector<int32_t> greedy_by_full_forward(CpuModel<float>& model, std::vector<int32_t> tokens, int new_tokens) {
  std::vector<int32_t> out;
  for (int i = 0; i < new_tokens; ++i) {
    std::vector<float> logits = last_logits(model, tokens);
    int32_t next = (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    tokens.push_back(next);
  }
  return out;
}

TEST(Generate, GreedyEqualsFullRecomputation) {
  for (const char* type : {"llama", "mistral"}) {
    ModelConfig config = generation_config(type);
    auto model = random_model<float>(config, 3);
    for (int prompt_length : {1, 5, 11}) {
      std::vector<int32_t> prompt = random_tokens(prompt_length, config.vocab_size, 4 + prompt_length);
      const int new_tokens = config.max_position_embeddings - prompt_length;
      SamplingOptions greedy;
      greedy.max_new_tokens = new_tokens;
      Generation cached = generate(*model, prompt, {}, greedy);
      EXPECT_FALSE(cached.stopped);
      EXPECT_EQ(cached.ids, greedy_by_full_forward(*model, prompt, new_tokens)) << type << " prompt " << prompt_length;
    }
  }
}

TEST(Generate, StopsAtStopIdWithoutReturningIt) {
  ModelConfig config = generation_config("llama");
  auto model = random_model<float>(config, 5);
  std::vector<int32_t> prompt = random_tokens(3, config.vocab_size, 6);
  SamplingOptions greedy;
  greedy.max_new_tokens = 20;
  Generation full = generate(*model, prompt, {}, greedy);
  // Stop at the first token that appears after position 2 for the first time.
  size_t cut = 2;
  while (cut < full.ids.size() && std::find(full.ids.begin(), full.ids.begin() + cut, full.ids[cut]) !=
                                      full.ids.begin() + cut)
    ++cut;
  ASSERT_LT(cut, full.ids.size()) << "no new token after position 2 to stop at";
  Generation stopped = generate(*model, prompt, {full.ids[cut], config.vocab_size + 5}, greedy);
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + cut));
  EXPECT_EQ(stopped.logprobs.size(), cut + 1) << "one log-prob per returned id and one for the stop id";
  EXPECT_EQ(stopped.entropies.size(), cut + 1);
}

// The per-step log-prob of the drawn id and the entropy of the model's distribution (temperature 1, whatever
// the sampling temperature) equal log-softmax of a full forward's logits, computed here in double.
TEST(Generate, LogProbsAndEntropiesOfTheModelsDistribution) {
  ModelConfig config = generation_config("llama");
  auto model = random_model<float>(config, 8);
  std::vector<int32_t> tokens = random_tokens(4, config.vocab_size, 9);
  SamplingOptions sampled;
  sampled.temperature = 0.7f;
  sampled.max_new_tokens = 10;
  sampled.seed = 11;
  const Generation g = generate(*model, tokens, {}, sampled);
  ASSERT_EQ(g.logprobs.size(), g.ids.size());
  ASSERT_EQ(g.entropies.size(), g.ids.size());
  for (size_t i = 0; i < g.ids.size(); ++i) {
    const std::vector<float> logits = last_logits(*model, tokens);
    double mx = logits[0], sum = 0, weighted = 0;
    for (float x : logits) mx = std::max(mx, double(x));
    for (float x : logits) sum += std::exp(double(x) - mx);
    for (float x : logits) weighted += std::exp(double(x) - mx) / sum * (double(x) - mx);
    const double logprob = double(logits[g.ids[i]]) - mx - std::log(sum), entropy = std::log(sum) - weighted;
    EXPECT_NEAR(g.logprobs[i], logprob, 1e-4 * (1 + std::fabs(logprob))) << "step " << i;
    EXPECT_NEAR(g.entropies[i], entropy, 1e-4 * (1 + entropy)) << "step " << i;
    EXPECT_GT(entropy, 0.1) << "a random model's distribution is far from one-hot";
    tokens.push_back(g.ids[i]);
  }
}

TEST(Generate, RejectsPromptBeyondContext) {
  ModelConfig config = generation_config("llama");
  auto model = random_model<float>(config, 7);
  SamplingOptions options;
  options.max_new_tokens = config.max_position_embeddings;
  EXPECT_THROW(generate(*model, {1, 2}, {}, options), Error);
  EXPECT_THROW(generate(*model, {}, {}, SamplingOptions{}), Error);
}

// transformers' greedy generate() with its own KV cache on the model fixtures' checkpoints.
TEST(Generate, ReproducesTransformersGreedy) {
  nlohmann::json fixture = test::json_fixture("generate/greedy.json", 1);
  const int new_tokens = fixture["max_new_tokens"];
  for (const auto& [name, entry] : fixture["models"].items()) {
    auto model = model_load_hf<float>(test::fixture_path("model/" + name));
    for (const auto& c : entry["cases"]) {
      std::vector<int32_t> prompt = c["prompt"], expected = c["generated"];
      std::vector<double> gaps = c["top2_gap"];
      SamplingOptions greedy;
      greedy.max_new_tokens = new_tokens;
      std::vector<int32_t> ours = generate(*model, prompt, {}, greedy).ids;
      ASSERT_EQ(ours.size(), expected.size());
      for (size_t i = 0; i < ours.size(); ++i)
        ASSERT_EQ(ours[i], expected[i]) << name << " prompt of " << prompt.size() << " tokens, step " << i
                                        << " (transformers' top-2 logit gap there: " << gaps[i]
                                        << "); if tests/fixtures/model was regenerated, rerun "
                                           "dev/reference/make_generate_fixtures.py";
    }
  }
}

// ---- sampling ----

std::vector<double> softmax(const std::vector<float>& logits, double temperature) {
  std::vector<double> p(logits.size());
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) total += (p[i] = std::exp(logits[i] / temperature));
  for (double& x : p) x /= total;
  return p;
}

std::vector<double> sample_frequencies(const std::vector<float>& logits, const SamplingOptions& options, int draws) {
  std::mt19937_64 rng(options.seed);
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) freq[sample_next(logits.data(), (int)logits.size(), options, rng)] += 1.0 / draws;
  return freq;
}

TEST(Sampling, GreedyIsFirstArgmax) {
  std::vector<float> logits = test::random_normal(50, 2.0f);
  std::mt19937_64 rng(1);
  SamplingOptions greedy;
  int32_t best = (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
  EXPECT_EQ(sample_next(logits.data(), 50, greedy, rng), best);
  logits[7] = logits[31] = logits[best] + 1.0f;  // a tie goes to the lower id
  EXPECT_EQ(sample_next(logits.data(), 50, greedy, rng), 7);
}

// A model whose vocabulary is padded past the tokenizer's never yields a padding id, greedy or sampled.
TEST(Generate, VocabLimitKeepsPaddingIdsOut) {
  ModelConfig config = generation_config("llama");
  auto model = random_model<float>(config, 8);
  const std::vector<int32_t> prompt = random_tokens(4, config.vocab_size, 9);
  SamplingOptions options;
  options.max_new_tokens = 24;
  const Generation unlimited = generate(*model, prompt, {}, options);
  ASSERT_FALSE(unlimited.ids.empty());
  // Cut the vocabulary just below the greedy run's largest id: that id may no longer appear.
  options.vocab_limit = *std::max_element(unlimited.ids.begin(), unlimited.ids.end());
  for (float temperature : {0.0f, 1.5f}) {
    options.temperature = temperature;
    for (int32_t id : generate(*model, prompt, {}, options).ids)
      EXPECT_LT(id, options.vocab_limit) << "temperature " << temperature;
  }
}

TEST(Sampling, FrequenciesFollowSoftmaxWithTemperature) {
  std::vector<float> logits = test::random_normal(6, 1.0f);
  SamplingOptions options;
  options.temperature = 0.7f;
  options.seed = test::seed_from_test_name();
  const int draws = 200000;
  std::vector<double> freq = sample_frequencies(logits, options, draws), p = softmax(logits, 0.7);
  for (size_t i = 0; i < p.size(); ++i)
    EXPECT_NEAR(freq[i], p[i], 5 * std::sqrt(p[i] * (1 - p[i]) / draws) + 1e-4) << "token " << i;
}

TEST(Sampling, TopPKeepsTheNucleusRenormalised) {
  std::vector<float> logits = {0.3f, 2.0f, -1.0f, 1.4f, 0.9f, -0.2f};
  std::vector<double> p = softmax(logits, 1.0);
  // Sorted: ids 1, 3, 4, 0, ... A top_p just above p1 + p3 keeps exactly three tokens.
  SamplingOptions options;
  options.temperature = 1.0f;
  options.top_p = (float)(p[1] + p[3] + 0.5 * p[4]);
  options.seed = test::seed_from_test_name();
  const int draws = 200000;
  std::vector<double> freq = sample_frequencies(logits, options, draws);
  const double kept = p[1] + p[3] + p[4];
  for (int id : {0, 2, 5}) EXPECT_EQ(freq[id], 0.0) << "token " << id << " is outside the nucleus";
  for (int id : {1, 3, 4})
    EXPECT_NEAR(freq[id], p[id] / kept, 5 * std::sqrt(p[id] / kept / draws) + 1e-4) << "token " << id;
  options.top_p = 1e-6f;  // the most likely token only
  EXPECT_NEAR(sample_frequencies(logits, options, 1000)[1], 1.0, 1e-9);
}

TEST(Sampling, SeedRepeatsGenerationOtherSeedsDiffer) {
  ModelConfig config = generation_config("llama");
  auto model = random_model<float>(config, 8);
  SamplingOptions options;
  options.temperature = 1.0f;
  options.top_p = 0.9f;
  options.max_new_tokens = 24;
  std::vector<int32_t> prompt = random_tokens(4, config.vocab_size, 9);
  options.seed = 11;
  Generation a = generate(*model, prompt, {}, options), b = generate(*model, prompt, {}, options);
  EXPECT_EQ(a.ids, b.ids);
  int differing = 0;
  for (uint64_t seed = 12; seed < 17; ++seed) {
    options.seed = seed;
    differing += generate(*model, prompt, {}, options).ids != a.ids;
  }
  EXPECT_GE(differing, 4);
}

}  // namespace
}  // namespace stapo
