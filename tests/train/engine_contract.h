// The Engine contract of train/engine.h, checked the same way for every engine: the CPU engine in
// test_engine_contract.cpp (cpu), the CUDA engine in test_cuda_engine.cpp (gpu). Also the tiny models and the
// batches both use: shapes the CUDA kernels accept (hidden and vocabulary sizes multiples of 8, head_dim 64).
#pragma once
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "tests/train/train_test_util.h"
#include "train/engine.h"
#include "train/trainer.h"

namespace stapo::test {

// The 2-layer tiny config of the trainer tests, widened to what the CUDA kernels accept: a Llama (llama3 RoPE,
// untied) or a Mistral (sliding window 12, tied embeddings).
inline ModelConfig engine_test_config(bool mistral) {
  ModelConfig c = train_tiny_config(384);
  c.model_type = mistral ? "mistral" : "llama";
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = mistral;
  if (mistral) {
    c.sliding_window = 12;
  } else {
    c.rope_theta = 500000.0;
    c.rope_scaling = RopeScaling{true, 8.0, 1.0, 4.0, 16};
  }
  c.bos_token_ids = {1};
  c.eos_token_ids = {2};
  return c;
}

// Weights of order 1 in the logits (stddev 0.1), so log-probs are far from uniform.
inline std::unique_ptr<CpuModel<float>> engine_test_model(bool mistral, uint64_t seed) {
  auto model = std::make_unique<CpuModel<float>>(engine_test_config(mistral));
  model_init_random(*model, seed, 0.1f);
  return model;
}

// n pairs of random tokens, prompts of 4–10 and responses of 3–16 tokens (sequences fit rows of 32), written
// to `dir`/`name` with random reference log-probs.
inline std::string engine_test_shard(const std::string& dir, const std::string& name, int n, int vocab,
                                     uint64_t seed) {
  return write_shard(dir, name, make_pairs(n, vocab, seed, false, PairLengths{4, 7, 3, 14}), vocab, true, seed + 1);
}

inline PairLoaderConfig engine_test_loader(int pairs_per_batch, bool pack) {
  PairLoaderConfig c = test_loader_config(pairs_per_batch);
  c.row_length = 32;
  c.pack = pack;
  return c;
}

// Exactly equal, as the same computation on the same inputs gives (NaN equals NaN here).
inline bool same_value(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

inline void expect_same_results(const std::vector<PairResult>& got, const std::vector<PairResult>& want,
                                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); i++) {
    const PairResult &g = got[i], &w = want[i];
    EXPECT_EQ(g.pair_id, w.pair_id) << what << " pair " << i;
    EXPECT_TRUE(same_value(g.logps.logp_chosen, w.logps.logp_chosen) &&
                same_value(g.logps.logp_rejected, w.logps.logp_rejected) &&
                g.logps.len_chosen == w.logps.len_chosen && g.logps.len_rejected == w.logps.len_rejected &&
                g.logps.ref_chosen == w.logps.ref_chosen && g.logps.ref_rejected == w.logps.ref_rejected &&
                same_value(g.entropy_chosen, w.entropy_chosen) && same_value(g.entropy_rejected, w.entropy_rejected) &&
                same_value(g.loss.loss, w.loss.loss) && same_value(g.loss.z, w.loss.z) &&
                same_value(g.loss.dloss_dlogp_chosen, w.loss.dloss_dlogp_chosen))
        << what << " pair " << i << " (id " << g.pair_id << ")";
  }
}

using EngineMaker = std::function<std::unique_ptr<Engine>()>;

// take_results returns the pairs of every run_pairs since the last take, once, in run order: an evaluation-sized
// run of many forward-only batches (more pairs than the CUDA engine's first result buffer of 256) gives exactly
// what taking after each batch gives; lengths and references are the batch's; a second take is empty, and
// without an optimizer step grad_norm is 0 and updated false.
inline void check_results_collect_every_pair(const EngineMaker& make, const std::string& dir) {
  const ModelConfig config = engine_test_config(false);
  Shard shard(engine_test_shard(dir, "collect.bin", 270, config.vocab_size, 17));
  const PairLoaderConfig lc = engine_test_loader(3, true);
  std::vector<PairBatch> batches;
  for (int64_t first = 0; first < 270; first += 3) batches.push_back(batch_of(shard, {first + 2, first, first + 1}, lc));
  const LossConfig loss = loss_defaults(LossKind::dpo);  // sum-ref: the references enter the loss
  std::unique_ptr<Engine> engine = make();
  std::vector<PairResult> one_by_one;
  for (const PairBatch& b : batches) {
    run_micro_batches(*engine, {b}, loss, false);
    const StepResults r = engine->take_results();
    EXPECT_EQ(r.pairs.size(), 3u);
    one_by_one.insert(one_by_one.end(), r.pairs.begin(), r.pairs.end());
  }
  for (const PairBatch& b : batches) run_micro_batches(*engine, {b}, loss, false);
  const StepResults all = engine->take_results();
  expect_same_results(all.pairs, one_by_one, "one take after 90 batches vs a take per batch");
  EXPECT_EQ(all.grad_norm, 0.0);
  EXPECT_FALSE(all.updated);
  ASSERT_EQ(all.pairs.size(), 270u);
  for (size_t i = 0; i < all.pairs.size(); i++) {
    const PairBatch& b = batches[i / 3];
    const PairResult& r = all.pairs[i];
    const int k = int(i % 3);
    EXPECT_EQ(r.pair_id, b.pair_ids[k]);
    EXPECT_EQ(r.logps.len_chosen, b.response_length[2 * k]);
    EXPECT_EQ(r.logps.len_rejected, b.response_length[2 * k + 1]);
    EXPECT_EQ(r.logps.ref_chosen, b.reference_logps[2 * k]);
    EXPECT_TRUE(std::isfinite(r.loss.loss) && r.logps.logp_chosen < 0 && r.entropy_chosen > 0) << "pair " << i;
  }
  const StepResults again = engine->take_results();
  EXPECT_TRUE(again.pairs.empty());
}

// A step whose loss is not finite while its gradients are (a reference log-prob of +inf under dpo's sum-ref
// reward: z = −inf, ℓ = inf, dℓ/dz = −1) is not applied: weights and AdamW moments stay bit for bit, updated is
// false, the (finite) gradient norm is reported. zero_grad clears the condition: the next finite step updates.
// The step before it makes the moments non-zero, so "untouched" is not "still zero".
inline void check_nonfinite_loss_skips_update(const EngineMaker& make, const std::string& dir) {
  const ModelConfig config = engine_test_config(false);
  Shard shard(engine_test_shard(dir, "nonfinite.bin", 4, config.vocab_size, 23));
  const PairLoaderConfig lc = engine_test_loader(2, true);
  const PairBatch good = batch_of(shard, {0, 1}, lc);
  PairBatch bad = batch_of(shard, {2, 3}, lc);
  bad.reference_logps[2] = INFINITY;  // pair 3's chosen reference
  const LossConfig loss = loss_defaults(LossKind::dpo);
  AdamWConfig adamw;
  adamw.weight_decay = 0.1;
  std::unique_ptr<Engine> engine = make();
  auto step = [&](const PairBatch& b, int64_t t) {
    engine->zero_grad();
    run_micro_batches(*engine, {b}, loss, true);
    engine->optimizer_step({1e-3, 1.0, adamw, t});
    return engine->take_results();
  };
  const StepResults first = step(good, 1);
  ASSERT_TRUE(first.updated) << "a finite step updates";
  EXPECT_GT(first.grad_norm, 0.0);
  const std::unique_ptr<CpuModel<float>> before = engine->weights_to_cpu();
  engine->save_optimizer(dir + "/before.bin");

  const StepResults skipped = step(bad, 2);
  EXPECT_FALSE(skipped.updated);
  EXPECT_TRUE(std::isfinite(skipped.grad_norm) && skipped.grad_norm > 0) << skipped.grad_norm;
  ASSERT_EQ(skipped.pairs.size(), 2u);
  EXPECT_TRUE(std::isfinite(skipped.pairs[0].loss.loss));
  EXPECT_FALSE(std::isfinite(skipped.pairs[1].loss.loss));
  const std::unique_ptr<CpuModel<float>> after = engine->weights_to_cpu();
  ASSERT_EQ(before->num_params(), after->num_params());
  size_t changed = 0;
  for (size_t i = 0; i < before->num_params(); i++) changed += before->param_data()[i] != after->param_data()[i];
  EXPECT_EQ(changed, 0u) << "weights changed by a step whose loss was not finite";
  engine->save_optimizer(dir + "/after.bin");
  EXPECT_TRUE(read_text_file(dir + "/before.bin") == read_text_file(dir + "/after.bin")) << "AdamW moments changed";

  const StepResults next = step(good, 2);
  EXPECT_TRUE(next.updated) << "zero_grad clears the non-finite loss of the step before";
  const std::unique_ptr<CpuModel<float>> updated = engine->weights_to_cpu();
  changed = 0;
  for (size_t i = 0; i < before->num_params(); i++) changed += before->param_data()[i] != updated->param_data()[i];
  EXPECT_GT(changed, 0u);
}

}  // namespace stapo::test
