// Helpers of the trainer tests: a tiny Llama config, shards of random or synthetic preference pairs written
// with the real shard writer and batches from the real dataloader.
#pragma once
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/pair_loader.h"
#include "data/shard.h"
#include "model/model.h"
#include "tests/test_util.h"

namespace stapo::test {

inline ModelConfig train_tiny_config(int vocab = 16) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0;
  return c;
}

// Token counts drawn per pair: prompts of prompt_min .. prompt_min + prompt_span - 1 tokens, each response of
// response_min .. response_min + response_span - 1.
struct PairLengths {
  int prompt_min = 2, prompt_span = 4, response_min = 1, response_span = 5;
};

// `synthetic`: the chosen response repeats the prompt, the rejected one is random — a preference a tiny model
// can learn. Otherwise both responses are random. Lengths vary so `avg` normalisation matters.
inline std::vector<TokenizedPair> make_pairs(int n, int vocab, uint64_t seed, bool synthetic,
                                             const PairLengths& lengths = {}) {
  std::mt19937_64 rng(seed);
  auto token = [&] { return int32_t(rng() % uint64_t(vocab)); };
  auto response_len = [&] { return lengths.response_min + int(rng() % uint64_t(lengths.response_span)); };
  std::vector<TokenizedPair> pairs(n);
  for (int i = 0; i < n; i++) {
    TokenizedPair& p = pairs[i];
    p.id = cat("pair-", i);
    const int prompt_len = lengths.prompt_min + int(rng() % uint64_t(lengths.prompt_span));
    for (int t = 0; t < prompt_len; t++) p.prompt.push_back(token());
    const int chosen_len = response_len(), rejected_len = response_len();
    for (int t = 0; t < chosen_len; t++) p.chosen.push_back(synthetic ? p.prompt[t % prompt_len] : token());
    for (int t = 0; t < rejected_len; t++) p.rejected.push_back(token());
  }
  return pairs;
}

// Writes a shard; with `reference` also random reference log-probs (as a reference pass would store).
inline std::string write_shard(const std::string& dir, const std::string& name,
                               const std::vector<TokenizedPair>& pairs, int vocab, bool reference, uint64_t seed) {
  const std::string path = dir + "/" + name;
  ShardInfo info;
  info.tokenizer_hash = "test";
  info.template_name = "test";
  info.vocab_size = vocab;
  shard_write(path, info, pairs);
  if (reference) {
    std::mt19937_64 rng(seed);
    std::vector<float> logps(2 * pairs.size());
    for (size_t i = 0; i < pairs.size(); i++) {
      logps[2 * i] = -float(pairs[i].chosen.size()) * (0.5f + float(rng() % 1000) / 500.0f);
      logps[2 * i + 1] = -float(pairs[i].rejected.size()) * (0.5f + float(rng() % 1000) / 500.0f);
    }
    shard_write_reference_logps(path, 0, logps);
    shard_mark_reference_complete(path, "test reference");
  }
  return path;
}

inline PairLoaderConfig test_loader_config(int pairs_per_batch, uint64_t seed = 3) {
  PairLoaderConfig c;
  c.pairs_per_batch = pairs_per_batch;
  c.row_length = 16;
  c.pad_multiple = 1;
  c.seed = seed;
  return c;
}

// The batch of the given shard pairs, built by the dataloader's own layout code.
inline PairBatch batch_of(const Shard& shard, std::vector<int64_t> indices, const PairLoaderConfig& config) {
  PairBatch b;
  pair_batch_fill(b, shard, indices, config);
  return b;
}

}  // namespace stapo::test
