// The step-0 diagnostics (train/step0.h) on a tiny Llama: Δ and z of the training pairs under the initial
// weights, and the reversal-hazard warning. Pairs whose two responses are both the model's own samples (on-policy:
// Δ near 0) do not set it off; pairs whose rejected response is something the model would not say (uniformly
// random tokens, as malformed off-policy answers) do. The quantiles equal those of the engine's own per-pair Δ,
// and the reference-pass route gives the forward pass's numbers without running the model.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "tests/train/train_test_util.h"
#include "train/cpu_engine.h"
#include "train/scoring.h"
#include "train/step0.h"
#include "train/trainer.h"

namespace stapo {
namespace {

constexpr int kVocab = 16, kReplyTokens = 24;

// A tiny model with a peaked next-token distribution (larger init), so that its own samples are far more
// likely under it than uniformly random tokens.
std::unique_ptr<CpuModel<float>> peaked_model() {
  auto model = std::make_unique<CpuModel<float>>(test::train_tiny_config(kVocab));
  model_init_random(*model, 5, 0.6f);
  return model;
}

// 64 pairs of random prompts; chosen = a sample of the model; rejected = another sample (on-policy) or uniformly
// random tokens of the same length (off-policy).
std::vector<TokenizedPair> pairs_for(const CpuModel<float>& model, bool on_policy) {
  std::mt19937_64 rng(test::seed_from_test_name(on_policy));
  std::vector<TokenizedPair> pairs(64);
  SamplingOptions sampling;
  sampling.temperature = 1.0f;
  sampling.max_new_tokens = kReplyTokens;
  for (size_t i = 0; i < pairs.size(); i++) {
    TokenizedPair& p = pairs[i];
    p.id = cat("pair-", i);
    for (int t = 0; t < 4; t++) p.prompt.push_back(int32_t(rng() % kVocab));
    sampling.seed = rng();
    p.chosen = generate(model, p.prompt, {}, sampling).ids;
    if (on_policy) {
      sampling.seed = rng();
      p.rejected = generate(model, p.prompt, {}, sampling).ids;
    } else {
      for (int t = 0; t < kReplyTokens; t++) p.rejected.push_back(int32_t(rng() % kVocab));
    }
  }
  return pairs;
}

nlohmann::ordered_json diagnose(const std::string& path, const LossConfig& config) {
  Shard shard(path);
  PairLoaderConfig lc = test::test_loader_config(8, 3);
  lc.row_length = 32;
  CpuEngine<float> engine(peaked_model());
  const std::vector<PairResult> pairs = step0_pairs_from_engine(engine, shard, lc, config, 512);
  EXPECT_EQ(pairs.size(), 64u) << "the whole epoch when it is shorter than the sample";
  return step0_json(pairs, config, "forward pass");
}

TEST(Step0, WarnsOnOffPolicyRejectedAnswersNotOnTheModelsOwnSamples) {
  test::TempDir dir;
  const auto model = peaked_model();
  const LossConfig stapo = loss_defaults(LossKind::stapo_sigmoid);
  const auto on = diagnose(test::write_shard(dir.path, "on.bin", pairs_for(*model, true), kVocab, false, 0), stapo);
  const auto off = diagnose(test::write_shard(dir.path, "off.bin", pairs_for(*model, false), kVocab, false, 0), stapo);
  printf("on-policy:  Δ 5%% %.3f 50%% %.3f 95%% %.3f, %.1f%% above m_r\n", on["step0/delta/p05"].get<double>(),
         on["step0/delta/p50"].get<double>(), on["step0/delta/p95"].get<double>(),
         100 * on["step0/frac_above_right"].get<double>());
  printf("off-policy: Δ 5%% %.3f 50%% %.3f 95%% %.3f, %.1f%% above m_r\n", off["step0/delta/p05"].get<double>(),
         off["step0/delta/p50"].get<double>(), off["step0/delta/p95"].get<double>(),
         100 * off["step0/frac_above_right"].get<double>());
  EXPECT_LE(on["step0/frac_above_right"].get<double>(), kStep0WarnFraction);
  EXPECT_GT(off["step0/frac_above_right"].get<double>(), 0.5);
  EXPECT_EQ(step0_warning(on, stapo), "");
  const std::string warning = step0_warning(off, stapo);
  EXPECT_NE(warning.find("start above StaPO's right margin"), std::string::npos) << warning;
  EXPECT_NE(warning.find("reversal hazard"), std::string::npos) << warning;
  // The warning is StaPO's (and its absolute right margin's) only.
  EXPECT_EQ(step0_warning(off, loss_defaults(LossKind::simpo)), "");
  LossConfig saturate = stapo;
  saturate.right_margin = RightMargin::saturate;
  EXPECT_EQ(step0_warning(off, saturate), "");
  // z = β·Δ in every quantile
  for (const char* q : {"p05", "p25", "p50", "p75", "p95"})
    EXPECT_NEAR(off[cat("step0/z/", q)].get<double>(), stapo.beta * off[cat("step0/delta/", q)].get<double>(), 1e-9);
  EXPECT_NE(step0_table(off, stapo).find("above the right margin"), std::string::npos);
}

// After a reference pass with the initial weights the diagnostics read S = Sref from the shard: the same Δ as
// a forward pass (up to the reference's float storage), for every pair.
TEST(Step0, ReferencePassRouteEqualsTheForwardPass) {
  test::TempDir dir;
  const auto model = peaked_model();
  const std::string path = test::write_shard(dir.path, "d.bin", pairs_for(*model, false), kVocab, false, 0);
  PairLoaderConfig lc = test::test_loader_config(8, 3);
  lc.row_length = 32;
  CpuEngine<float> engine(peaked_model());
  ASSERT_TRUE(reference_ensure(engine, path, lc, "initial"));
  Shard shard(path);
  const LossConfig config = loss_defaults(LossKind::stapo_sigmoid);
  std::vector<PairResult> from_reference = step0_pairs_from_reference(shard, config);
  std::vector<PairResult> from_forward = step0_pairs_from_engine(engine, shard, lc, config, 64);
  ASSERT_EQ(from_reference.size(), from_forward.size());
  std::sort(from_forward.begin(), from_forward.end(), [](auto& a, auto& b) { return a.pair_id < b.pair_id; });
  for (size_t i = 0; i < from_reference.size(); i++) {
    EXPECT_EQ(from_reference[i].pair_id, from_forward[i].pair_id);
    EXPECT_NEAR(from_reference[i].loss.delta, from_forward[i].loss.delta, 1e-5) << "pair " << i;
  }
  const auto a = step0_json(from_reference, config, "r"), b = step0_json(from_forward, config, "f");
  EXPECT_NEAR(a["step0/delta/p50"].get<double>(), b["step0/delta/p50"].get<double>(), 1e-5);
  EXPECT_EQ(a["step0/frac_above_right"], b["step0/frac_above_right"]);
}

}  // namespace
}  // namespace stapo
