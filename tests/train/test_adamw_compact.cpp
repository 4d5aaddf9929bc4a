// The compact AdamW state of model/ops/adamw.h through its CPU twin (train/adamw.h's adamw_compact_update):
// split master weights equal the fp32 master path bit for bit; the float twin agrees with the double AdamW the
// trainer checks against torch; the 8-bit maps follow the dynamic tree; 8-bit block-wise moments stay close to
// fp32 ones, on random gradients and on a tiny model trained by the CPU engine (N steps, loss curves), the input
// embedding keeps fp32 moments among them, a run with them resumes bitwise, and a state written before the
// embedding kept fp32 moments (version 3) is read.
#include <cmath>
#include <cstring>
#include <random>

#include "common/checksum.h"
#include "common/file_io.h"
#include "tests/train/adamw_test_util.h"
#include "tests/train/train_test_util.h"
#include "train/adamw.h"
#include "train/cpu_engine.h"
#include "train/optimizer_state.h"
#include "train/trainer.h"

namespace stapo {
namespace {

uint32_t bits_of(float x) { return float_bits(x); }

TEST(SplitMaster, EveryBitPatternRoundTrips) {
  int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static)
  for (int64_t k = 0; k <= int64_t(UINT32_MAX); k++) {
    const uint32_t u = uint32_t(k);
    const float x = bits_float(u);
    bad += float_bits(split_join(split_high(x), split_low(x))) != u;
  }
  EXPECT_EQ(bad, 0);
}

// The high half is bf16 round-to-nearest: ties to even except at exact ties, which go away from zero.
TEST(SplitMaster, HighHalfIsRoundToNearest) {
  std::mt19937 rng(test::seed_from_test_name());
  int64_t ties = 0;
  for (int k = 0; k < (1 << 22); k++) {
    uint32_t u = rng();
    if (k % 16 == 0) u = (u & 0xFFFF0000u) | 0x8000u;  // plenty of exact ties
    const float x = bits_float(u);
    if (!std::isfinite(x)) continue;
    const uint16_t high = split_high(x), nearest = bf16_round_nearest(x);
    if ((u & 0xFFFFu) == 0x8000u) {
      ++ties;
      EXPECT_EQ(high, uint16_t((u >> 16) + 1)) << std::hex << u;  // away from zero
      EXPECT_EQ(nearest, uint16_t((u >> 16) + ((u >> 16) & 1))) << std::hex << u;  // to even
    } else {
      ASSERT_EQ(high, nearest) << std::hex << u;
    }
  }
  EXPECT_GT(ties, 100000);
  // The round trip through bf16: |x − high| is at most half a bf16 ulp.
  const float x = 1.0f + 3.0f / 512.0f;  // 1 + 1.5 bf16 ulps: a tie, rounded away to 1 + 2 ulps
  EXPECT_EQ(bf16_bits_to_float(split_high(x)), 1.0f + 4.0f / 512.0f);
  EXPECT_EQ(bf16_bits_to_float(split_high(-x)), -(1.0f + 4.0f / 512.0f));
}

using TwinState = test::AdamWHostState;

AdamWStep<float> test_step(int64_t t, double lr = 1e-3, double weight_decay = 0.1) {
  return adamw_step_make<float>(lr, weight_decay, 0.9, 0.999, 1e-8, t);
}

// Gradients whose scale varies by 10^4 inside each block, as real gradients do.
std::vector<float> test_grads(size_t n, uint64_t salt) {
  std::vector<float> g = test::random_normal(n, 1.0f, salt);
  const std::vector<float> scale = test::random_uniform(n, -4.0f, 0.0f, salt + 1000);
  for (size_t i = 0; i < n; i++) g[i] *= std::pow(10.0f, scale[i]);
  return g;
}

TEST(AdamWCompact, SplitMasterEqualsFp32MasterBitForBit) {
  const size_t n = 3 * kQuantBlock + 5;  // a partial last block
  const std::vector<float> initial = test::random_normal(n, 0.02f, 1);
  for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
    TwinState fp32(initial, MasterKind::fp32), split(initial, MasterKind::split);
    for (int64_t t = 1; t <= 30; t++) {
      const std::vector<float> g = test_grads(n, 10 + t);
      adamw_compact_update(fp32.state(), MasterKind::fp32, moments, g.data(), test_step(t), 0.7f, 0);
      adamw_compact_update(split.state(), MasterKind::split, moments, g.data(), test_step(t), 0.7f, 0);
      for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(bits_of(split.master_value(i)), bits_of(fp32.master[i])) << "step " << t << " element " << i;
        // Both write the master's split_high: the bf16 weights the model computes with are the same too.
        ASSERT_EQ(split.weights[i], fp32.weights[i]) << "step " << t << " element " << i;
      }
      ASSERT_EQ(std::memcmp(split.m.data(), fp32.m.data(), n * 4), 0);
      ASSERT_EQ(std::memcmp(split.v.data(), fp32.v.data(), n * 4), 0);
      ASSERT_EQ(split.m_code, fp32.m_code);
      ASSERT_EQ(split.v_code, fp32.v_code);
      ASSERT_EQ(split.m_absmax, fp32.m_absmax);
    }
    // The steps moved the weights by far more than a bf16 rounding.
    EXPECT_GT(test::relative_error(fp32.master.data(), initial.data(), n), 0.1);
    printf("%s moments: 30 steps, master and bf16 weights bit-identical (%zu element-steps)\n",
           moments == MomentKind::q8 ? "8-bit" : "fp32", 30 * n);
  }
}

// The preconditions the twin and the kernel's launcher share name what is missing.
TEST(AdamWCompact, MissingStateIsNamed) {
  const std::vector<float> initial = test::random_normal(100, 0.02f, 9), g(100, 0.1f);
  TwinState twin(initial, MasterKind::fp32);
  AdamWState s = twin.state();
  EXPECT_NE(test::error_message([&] { adamw_compact_update(s, MasterKind::split, MomentKind::fp32, g.data(),
                                                           test_step(1), 1.0f, 0); })
                .find("MasterKind::split needs state.low"),
            std::string::npos);
  s.m_absmax = nullptr;
  EXPECT_NE(test::error_message([&] { adamw_compact_update(s, MasterKind::fp32, MomentKind::q8, g.data(),
                                                           test_step(1), 1.0f, 0); })
                .find("MomentKind::q8 needs"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { adamw_compact_update(twin.state(), MasterKind::fp32, MomentKind::fp32,
                                                           g.data(), test_step(0), 1.0f, 0); })
                .find("bias corrections"),
            std::string::npos);
}

// The float twin against the double AdamW that tests/train/test_optimizer.cpp checks against torch.
TEST(AdamWCompact, Fp32PathMatchesDoubleAdamW) {
  const size_t n = 2 * kQuantBlock + 77;
  std::vector<float> initial = test::random_normal(n, 0.02f, 2);
  TwinState twin(initial, MasterKind::fp32);
  std::vector<double> p(initial.begin(), initial.end()), m(n), v(n);
  AdamWConfig config;
  for (int64_t t = 1; t <= 20; t++) {
    const std::vector<float> g = test_grads(n, 20 + t);
    const std::vector<double> gd(g.begin(), g.end());
    adamw_compact_update(twin.state(), MasterKind::fp32, MomentKind::fp32, g.data(), test_step(t), 0.7f, 0);
    adamw_update(p.data(), gd.data(), m.data(), v.data(), n, 1e-3, 0.1, config, t, double(0.7f));
  }
  const std::vector<float> pf(p.begin(), p.end()), mf(m.begin(), m.end());
  EXPECT_LE(test::relative_error(twin.master.data(), pf.data(), n), 1e-6);
  EXPECT_LE(test::relative_error(twin.m.data(), mf.data(), n), 1e-6);
  EXPECT_GT(test::relative_error(twin.master.data(), initial.data(), n), 0.1);
}

// A tensor updated in parts (a data-parallel rank's ZeRO-1 shard: AdamWState::index_base) is updated exactly as
// in one call: the stochastic rounding is keyed by the index in the whole tensor. 8-bit moments split on block
// boundaries only; a part that starts inside a block, or indices past 2^32 with stochastic rounding, are refused.
TEST(AdamWCompact, PartsUpdateAsTheWholeTensor) {
  const size_t n = 4 * kQuantBlock + 77;
  const std::vector<float> initial = test::random_normal(n, 0.02f, 3);
  struct Case {
    MasterKind master;
    MomentKind moments;
    std::vector<size_t> cuts;  // the parts' first elements after 0
  };
  const Case cases[] = {{MasterKind::none, MomentKind::fp32, {384, 2944, 7040}},
                        {MasterKind::fp32, MomentKind::fp32, {128, 5120}},
                        {MasterKind::split, MomentKind::q8, {2 * kQuantBlock}}};
  for (const Case& c : cases) {
    TwinState whole(initial, c.master), parts(initial, c.master);
    std::vector<size_t> bounds = c.cuts;
    bounds.insert(bounds.begin(), 0);
    bounds.push_back(n);
    for (int64_t t = 1; t <= 5; t++) {
      const std::vector<float> g = test_grads(n, 40 + t);
      const uint32_t seed = 77u + uint32_t(t);
      adamw_compact_update(whole.state(), c.master, c.moments, g.data(), test_step(t), 0.7f, seed);
      for (size_t k = 0; k + 1 < bounds.size(); k++) {
        const size_t at = bounds[k];
        AdamWState s = parts.state();
        s.n = bounds[k + 1] - at;
        s.index_base = at;
        s.weights += at;
        if (s.master) s.master += at;
        if (s.low) s.low += at;
        s.m += at;
        s.v += at;
        s.m_code += at;
        s.v_code += at;
        s.m_absmax += at / kQuantBlock;
        s.v_absmax += at / kQuantBlock;
        adamw_compact_update(s, c.master, c.moments, g.data() + at, test_step(t), 0.7f, seed);
      }
      ASSERT_EQ(parts.weights, whole.weights) << "step " << t << ", master kind " << int(c.master);
      ASSERT_EQ(parts.master, whole.master) << "step " << t;
      ASSERT_EQ(parts.low, whole.low) << "step " << t;
      ASSERT_EQ(std::memcmp(parts.m.data(), whole.m.data(), n * 4), 0) << "step " << t;
      ASSERT_EQ(parts.m_code, whole.m_code) << "step " << t;
      ASSERT_EQ(parts.v_absmax, whole.v_absmax) << "step " << t;
    }
  }
  // A part keyed by its own indices (index_base left 0) rounds differently: the test can tell.
  TwinState whole(initial, MasterKind::none), unkeyed(initial, MasterKind::none);
  const std::vector<float> g = test_grads(n, 60);
  adamw_compact_update(whole.state(), MasterKind::none, MomentKind::fp32, g.data(), test_step(1), 0.7f, 5);
  AdamWState s = unkeyed.state();
  s.n = 384;
  adamw_compact_update(s, MasterKind::none, MomentKind::fp32, g.data(), test_step(1), 0.7f, 5);  // [0, 384)
  s.n = n - 384;
  s.weights += 384;
  s.m += 384;
  s.v += 384;
  adamw_compact_update(s, MasterKind::none, MomentKind::fp32, g.data() + 384, test_step(1), 0.7f, 5);
  EXPECT_NE(unkeyed.weights, whole.weights);

  TwinState q8(initial, MasterKind::fp32);
  AdamWState inside = q8.state();
  inside.index_base = 128;
  EXPECT_NE(test::error_message([&] { adamw_compact_update(inside, MasterKind::fp32, MomentKind::q8, g.data(),
                                                           test_step(1), 1.0f, 0); })
                .find("not a multiple of the block size 2048"),
            std::string::npos);
  AdamWState far = unkeyed.state();
  far.index_base = size_t(UINT32_MAX);
  EXPECT_NE(test::error_message([&] { adamw_compact_update(far, MasterKind::none, MomentKind::fp32, g.data(),
                                                           test_step(1), 1.0f, 0); })
                .find("at most 2^32 elements per tensor"),
            std::string::npos);
}

// MasterKind::none: each weight becomes one of the two bf16 neighbours of the fp32 update (the fp32 master path's
// result from the same start), the one away from zero with probability f, its distance from the neighbour toward
// zero in ulps. Round-to-nearest would give 0 for every f < 1/2 and 1 above, so the rate is checked in each half
// separately (within 5 standard deviations). The kernel is the twin bit for bit (tests/kernels).
TEST(AdamWCompact, StochasticRoundingIsUnbiased) {
  const size_t n = size_t(1) << 20;
  std::vector<float> initial = test::random_normal(n, 1.0f, 4);
  for (float& x : initial) x = bf16_bits_to_float(split_high(x));  // bf16 weights: both start from them exactly
  TwinState exact(initial, MasterKind::fp32), rounded(initial, MasterKind::none);
  const std::vector<float> g = test_grads(n, 5);
  adamw_compact_update(exact.state(), MasterKind::fp32, MomentKind::fp32, g.data(), test_step(3), 1.0f, 0);
  adamw_compact_update(rounded.state(), MasterKind::none, MomentKind::fp32, g.data(), test_step(3), 1.0f, 1234u);
  struct Half {
    double count = 0, away = 0, expected = 0, variance = 0;
  } halves[2];
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    const uint32_t toward = float_bits(exact.master[i]) & 0xFFFF0000u;  // truncation toward zero
    const float low = bits_float(toward), high = bits_float(toward + 0x10000u);
    const double ulp = std::fabs(double(high) - double(low));
    const float got = bf16_bits_to_float(rounded.weights[i]);
    if (got != low && got != high) ++bad;
    const double f = std::fabs(double(exact.master[i]) - double(low)) / ulp;
    Half& h = halves[f < 0.5 ? 0 : 1];
    h.count += 1;
    h.away += got == high;
    h.expected += f;
    h.variance += f * (1 - f);
  }
  EXPECT_EQ(bad, 0u) << "results that are not a bf16 neighbour of the fp32 update";
  for (int k = 0; k < 2; k++) {
    const Half& h = halves[k];
    ASSERT_GT(h.count, 1000) << "too few updates with f " << (k ? ">= 0.5" : "< 0.5") << " to test";
    EXPECT_NEAR(h.away / h.count, h.expected / h.count, 5 * std::sqrt(h.variance) / h.count + 1e-4)
        << "rate of rounding away from zero, f " << (k ? ">= 0.5" : "< 0.5");
    printf("f %s: %.0f updates, away from zero %.4f, expected %.4f\n", k ? ">= 0.5" : "< 0.5", h.count,
           h.away / h.count, h.expected / h.count);
  }
}

// Both maps against the definition in model/ops/adamw.h.
TEST(AdamW8bit, MapsFollowTheDynamicTree) {
  for (bool is_signed : {true, false}) {
    const QuantMap map = quant_map(is_signed);
    for (int i = 0; i + 1 < kQuantCodes; i++) {
      ASSERT_LE(map.value[i], map.value[i + 1]) << i;
      ASSERT_EQ(map.bound[i], (map.value[i] + map.value[i + 1]) * 0.5f) << i;
    }
    EXPECT_EQ(map.value[kQuantCodes - 1], 1.0f);
    EXPECT_EQ(map.value[0], is_signed ? -1.0f : 0.0f);
    // Per decade (10^-e·0.1, 10^-e]: 2^f values, f = 6 − e (signed) or 7 − e, equally spaced, the top one exact.
    const int top_bits = is_signed ? 6 : 7;
    int positives = 0;
    for (int e = 0; e <= top_bits; e++) {
      const double hi = std::pow(10.0, -e), lo = 0.1 * hi, step = 0.9 * hi / (1 << (top_bits - e));
      std::vector<double> in;
      for (float x : map.value)
        if (x > lo * (1 + 1e-6) && x <= hi * (1 + 1e-6)) in.push_back(x);
      ASSERT_EQ(int(in.size()), 1 << (top_bits - e)) << "decade " << e;
      for (size_t k = 0; k < in.size(); k++) EXPECT_NEAR(in[k], lo + step * double(k + 1), 1e-6 * hi) << e;
      positives += int(in.size());
    }
    EXPECT_EQ(positives, is_signed ? 127 : 255);
    int zeros = 0, negatives = 0;
    for (float x : map.value) {
      zeros += x == 0.0f;
      negatives += x < 0.0f;
    }
    EXPECT_EQ(zeros, is_signed ? 2 : 1);
    EXPECT_EQ(negatives, is_signed ? 127 : 0);
    if (is_signed) {  // symmetric
      for (int i = 0; i < kQuantCodes; i++) EXPECT_EQ(map.value[i], -map.value[kQuantCodes - 1 - i]) << i;
    }
  }
}

TEST(AdamW8bit, EncodePicksTheNearestValue) {
  for (bool is_signed : {true, false}) {
    const QuantMap map = quant_map(is_signed);
    for (int i = 0; i < kQuantCodes; i++)  // every value encodes to itself (to one of the two zeros)
      EXPECT_EQ(map.value[quant_encode(map.bound, map.value[i])], map.value[i]) << i;
    // Uniform and log-uniform magnitudes (most moments are far below their block's absmax).
    std::vector<float> x = test::random_uniform(100000, is_signed ? -1.0f : 0.0f, 1.0f, is_signed);
    const std::vector<float> e = test::random_uniform(100000, -8.0f, 0.0f, 7);
    for (size_t k = 0; k < e.size(); k++) x.push_back((k % 2 && is_signed ? -1.0f : 1.0f) * std::pow(10.0f, e[k]));
    for (float xi : x) {
      double best = 1e30;
      for (float value : map.value) best = std::min(best, std::fabs(double(xi) - value));
      const double got = std::fabs(double(xi) - map.value[quant_encode(map.bound, xi)]);
      ASSERT_LE(got, best + 1e-7 * std::fabs(xi)) << xi;  // the midpoints are rounded to float
    }
  }
}

TEST(AdamW8bit, ZeroGradientsKeepZeroMomentsAndOnlyDecay) {
  const size_t n = kQuantBlock + 1;
  const std::vector<float> initial = test::random_normal(n, 0.02f, 3), zero(n, 0.0f);
  TwinState twin(initial, MasterKind::fp32);
  adamw_compact_update(twin.state(), MasterKind::fp32, MomentKind::q8, zero.data(), test_step(1), 1.0f, 0);
  const float decay = test_step(1).decay;
  for (size_t i = 0; i < n; i++) ASSERT_EQ(twin.master[i], initial[i] * decay) << i;
  EXPECT_EQ(twin.m_absmax, std::vector<float>(2, 0.0f));
  EXPECT_EQ(twin.v_absmax, std::vector<float>(2, 0.0f));
  for (size_t i = 0; i < n; i++) ASSERT_EQ(quant_map(true).value[twin.m_code[i]], 0.0f) << i;
}

// Gradients like a weight matrix's: Gaussian, a persistent part (so the moments carry information) and noise,
// rows of 512 elements whose scales differ by up to 10x. 8-bit moments against fp32 ones.
TEST(AdamW8bit, CloseToFp32AdamWOnRandomGradients) {
  const size_t n = 32 * kQuantBlock, row = 512;
  const std::vector<float> initial = test::random_normal(n, 0.02f, 4), signal = test::random_normal(n, 1.0f, 5);
  const std::vector<float> row_scale = test::random_uniform(n / row, -1.0f, 0.0f, 6);
  TwinState fp32(initial, MasterKind::fp32), q8(initial, MasterKind::fp32);
  const int steps = 200;
  for (int64_t t = 1; t <= steps; t++) {
    std::vector<float> g = test::random_normal(n, 1.0f, 100 + t);
    for (size_t i = 0; i < n; i++) g[i] = (signal[i] + g[i]) * std::pow(10.0f, row_scale[i / row]);
    adamw_compact_update(fp32.state(), MasterKind::fp32, MomentKind::fp32, g.data(), test_step(t, 1e-4), 1.0f, 0);
    adamw_compact_update(q8.state(), MasterKind::fp32, MomentKind::q8, g.data(), test_step(t, 1e-4), 1.0f, 0);
  }
  // The distance travelled, and how far the 8-bit run ended from the fp32 run relative to it.
  std::vector<float> moved_fp32(n), moved_q8(n);
  for (size_t i = 0; i < n; i++) {
    moved_fp32[i] = fp32.master[i] - initial[i];
    moved_q8[i] = q8.master[i] - initial[i];
  }
  const double err = test::relative_error(moved_q8.data(), moved_fp32.data(), n);
  std::vector<float> m_q8(n), v_q8(n);
  const QuantMap sm = quant_map(true), um = quant_map(false);
  for (size_t i = 0; i < n; i++) {
    m_q8[i] = sm.value[q8.m_code[i]] * q8.m_absmax[i / kQuantBlock];
    v_q8[i] = um.value[q8.v_code[i]] * q8.v_absmax[i / kQuantBlock];
  }
  const double m_err = test::relative_error(m_q8.data(), fp32.m.data(), n);
  const double v_err = test::relative_error(v_q8.data(), fp32.v.data(), n);
  printf("8-bit vs fp32 moments after %d steps of %zu elements: update error %.2e, m %.2e, v %.2e\n", steps, n, err,
         m_err, v_err);
  // Measured: 5.0e-2, 3.2e-2, 1.5e-1. v's error is the paper's design: an EMA increment (1 − β2)·(g² − v) smaller
  // than half a step of the map rounds away, so an element's v follows its block's absmax rather than its own
  // gradients (docs/kernels.md, "8-bit moments").
  EXPECT_LE(err, 0.08);
  EXPECT_LE(m_err, 0.05);
  EXPECT_LE(v_err, 0.25);
  EXPECT_GT(err, 0.0);  // the 8-bit path did quantise
}

// A tiny Llama with tensors of several quantisation blocks, trained by the CPU engine with fp32 and with 8-bit
// moments on a learnable synthetic preference set.
ModelConfig small_config() {
  ModelConfig c = test::train_tiny_config(64);
  c.hidden_size = 32;
  c.intermediate_size = 128;  // MLP matrices of two blocks, the embedding and lm_head of one
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  return c;
}

TrainerConfig small_run(const std::string& out, int64_t steps) {
  TrainerConfig tc;
  tc.loss = loss_defaults(LossKind::stapo_sigmoid);
  tc.lr = 3e-3;
  tc.schedule = LrSchedule::cosine;
  tc.warmup_ratio = 0.1;
  tc.adamw.weight_decay = 0.01;
  tc.max_steps = steps;
  tc.out_dir = out;
  tc.seed = 5;
  return tc;
}

std::vector<double> train_losses(const std::string& data, const std::string& out, MomentKind moments, int64_t steps,
                                 std::vector<float>* weights) {
  Shard shard(data);
  PairLoader loader(shard, test::test_loader_config(8, 5));
  auto model = std::make_unique<CpuModel<float>>(small_config());
  model_init_random(*model, 71, 0.05f);
  CpuEngine<float> engine(std::move(model), nullptr, true, moments);
  Trainer trainer(engine, loader, nullptr, 0, small_run(out, steps));
  trainer.train();
  weights->assign(engine.model().param_data(), engine.model().param_data() + engine.model().num_params());
  std::vector<double> losses;
  for (const nlohmann::json& line : test::read_jsonl(out + "/log.jsonl"))
    if (line.contains("loss")) losses.push_back(line["loss"].get<double>());
  return losses;
}

TEST(AdamW8bit, TinyModelTrainsLikeFp32) {
  test::TempDir dir;
  const int vocab = 64;
  const std::string data =
      test::write_shard(dir.path, "train.bin", test::make_pairs(64, vocab, 29, true), vocab, false, 0);
  const int64_t steps = 60;
  std::vector<float> w_fp32, w_q8;
  const std::vector<double> fp32 = train_losses(data, dir.path + "/fp32", MomentKind::fp32, steps, &w_fp32);
  const std::vector<double> q8 = train_losses(data, dir.path + "/q8", MomentKind::q8, steps, &w_q8);
  ASSERT_EQ(fp32.size(), size_t(steps));
  ASSERT_EQ(q8.size(), size_t(steps));
  auto model = std::make_unique<CpuModel<float>>(small_config());
  model_init_random(*model, 71, 0.05f);
  std::vector<float> moved_fp32(w_fp32.size()), moved_q8(w_q8.size());
  for (size_t i = 0; i < w_fp32.size(); i++) {
    moved_fp32[i] = w_fp32[i] - model->param_data()[i];
    moved_q8[i] = w_q8[i] - model->param_data()[i];
  }
  const double err = test::relative_error(moved_q8.data(), moved_fp32.data(), moved_fp32.size());
  double max_diff = 0, tail_fp32 = 0, tail_q8 = 0;
  for (int64_t s = 0; s < steps; s++) max_diff = std::max(max_diff, std::fabs(q8[s] - fp32[s]));
  for (int64_t s = steps - 10; s < steps; s++) {
    tail_fp32 += fp32[s] / 10;
    tail_q8 += q8[s] / 10;
  }
  printf("tiny model (%zu parameters), %lld steps: weight change error %.2e; loss first %.4f/%.4f, mean of the "
         "last 10 %.4f (fp32) vs %.4f (8-bit), largest step difference %.4f\n",
         w_fp32.size(), (long long)steps, err, fp32[0], q8[0], tail_fp32, tail_q8, max_diff);
  EXPECT_EQ(fp32[0], q8[0]);                // the first loss comes before any update
  EXPECT_LT(tail_fp32, fp32[0] - 0.1);      // it learned
  // Measured: weight change error 4.0e-2, largest loss difference of a step 0.0018 (with the embedding's moments
  // 8-bit too: 4.3e-2 and 0.0015; this model's embedding is one block of 2048, its rows in every batch).
  EXPECT_LE(err, 0.08);
  EXPECT_LE(max_diff, 0.01);
}

TEST(AdamW8bit, ResumeIsBitwiseExactAndTheMomentKindIsChecked) {
  test::TempDir dir;
  const int vocab = 64;
  const std::string data =
      test::write_shard(dir.path, "train.bin", test::make_pairs(32, vocab, 31, true), vocab, false, 0);
  const std::string init = dir.path + "/init";
  {
    CpuModel<float> model(small_config());
    model_init_random(model, 72, 0.05f);
    model_save_hf(model, init, DType::F32);
  }
  const int64_t N = 3;
  auto run = [&](const std::string& out, const std::string& from, const std::string& resume) {
    Shard shard(data);
    PairLoader loader(shard, test::test_loader_config(4, 6));
    CpuEngine<float> engine(model_load_hf<float>(from), nullptr, true, MomentKind::q8);
    TrainerConfig tc = small_run(out, 2 * N);
    tc.save_every = N;
    Trainer trainer(engine, loader, nullptr, 0, tc);
    if (!resume.empty()) trainer.resume(resume);
    trainer.train();
  };
  const std::string ckpt = dir.path + "/straight/checkpoint-" + std::to_string(N);
  run(dir.path + "/straight", init, "");
  run(dir.path + "/resumed", ckpt, ckpt);
  auto straight = model_load_hf<float>(dir.path + "/straight/final");
  auto resumed = model_load_hf<float>(dir.path + "/resumed/final");
  EXPECT_EQ(std::memcmp(straight->param_data(), resumed->param_data(), straight->num_params() * 4), 0);
  EXPECT_EQ(read_text_file(dir.path + "/straight/final/optimizer.bin"),
            read_text_file(dir.path + "/resumed/final/optimizer.bin"));
  // An fp32-moment engine refuses the 8-bit state, and the other way round, naming the flag.
  CpuEngine<float> fp32(model_load_hf<float>(init));
  EXPECT_NE(test::error_message([&] { fp32.load_optimizer(ckpt + "/optimizer.bin"); }).find("--moments 8bit"),
            std::string::npos);
  fp32.save_optimizer(dir.path + "/fp32.bin");
  CpuEngine<float> q8(model_load_hf<float>(init), nullptr, true, MomentKind::q8);
  EXPECT_NE(test::error_message([&] { q8.load_optimizer(dir.path + "/fp32.bin"); }).find("--moments fp32"),
            std::string::npos);
}

// Under --moments 8bit the CPU engine keeps the input embedding's moments in fp32 and every other tensor's in 8 bits
// (train/adamw.h's keeps_fp32_moments), untied and tied to the lm_head: after one step the checkpoint holds fp32
// moments for exactly the embedding's elements, and they are the first step's exact values, (1 − β1)·g and
// (1 − β2)·g² in float (no clipping), from the gradient the engine still holds; the other tensors' are codes.
TEST(AdamW8bit, EmbeddingKeepsFp32Moments) {
  for (bool tied : {false, true}) {
    test::TempDir dir;
    const int vocab = 64;
    const std::string data =
        test::write_shard(dir.path, "train.bin", test::make_pairs(16, vocab, 33, true), vocab, false, 0);
    ModelConfig config = small_config();
    config.tie_word_embeddings = tied;
    Shard shard(data);
    PairLoader loader(shard, test::test_loader_config(8, 7));
    auto model = std::make_unique<CpuModel<float>>(config);
    model_init_random(*model, 73, 0.05f);
    CpuEngine<float> engine(std::move(model), nullptr, true, MomentKind::q8);
    EXPECT_NE(engine.description().find("8-bit AdamW moments (fp32 for the embedding)"), std::string::npos);
    TrainerConfig tc = small_run(dir.path + "/run", 1);
    tc.max_grad_norm = 0;
    Trainer trainer(engine, loader, nullptr, 0, tc);
    trainer.train();

    const std::vector<ParamSpec> specs = model_param_specs(config);
    const Parameter<float>& embed = engine.model().parameters()[0];
    ASSERT_EQ(specs[0].role, ParamRole::embed);
    size_t others = 0, other_blocks = 0;
    for (const ParamSpec& p : specs) {
      EXPECT_EQ(keeps_fp32_moments(p), p.role == ParamRole::embed) << p.name;
      if (p.role == ParamRole::embed) continue;
      others += p.numel;
      other_blocks += quant_blocks(p.numel);
    }
    Q8MomentState state;
    optimizer_state_read_q8(dir.path + "/run/final/optimizer.bin", specs, state);
    ASSERT_EQ(state.m.size(), embed.numel) << "tied " << tied;
    ASSERT_EQ(state.v.size(), embed.numel);
    EXPECT_EQ(state.m_code.size(), others);
    EXPECT_EQ(state.m_absmax.size(), other_blocks);
    const AdamWConfig adamw = tc.adamw;
    const float one_minus_beta1 = float(1.0 - adamw.beta1), one_minus_beta2 = float(1.0 - adamw.beta2);
    size_t differ = 0, nonzero = 0;
    for (size_t e = 0; e < embed.numel; ++e) {
      const float g = embed.grad[e];
      differ += bits_of(state.m[e]) != bits_of(one_minus_beta1 * g);
      differ += bits_of(state.v[e]) != bits_of(one_minus_beta2 * (g * g));
      nonzero += g != 0.0f;
    }
    EXPECT_EQ(differ, 0u) << "tied " << tied;
    EXPECT_GT(nonzero, embed.numel / 4) << "the step's gradient reached the embedding";
  }
}

// A version-3 state (every tensor 8-bit, written before the embedding kept fp32 moments) for the small model, built
// byte by byte with random codes and absmax: read, the embedding's codes become fp32 values, each the map's value
// times its block's absmax, as the old run's next step would have decoded them, and every other tensor keeps its
// codes and absmax. A CPU engine resumes from it and saves version 4 with the same moments; an fp32-moment engine
// refuses it, naming --moments 8bit.
TEST(AdamW8bit, Version3StateIsConverted) {
  test::TempDir dir;
  const std::vector<ParamSpec> specs = model_param_specs(small_config());
  uint64_t count = 0, blocks = 0;
  for (const ParamSpec& p : specs) {
    count += p.numel;
    blocks += quant_blocks(p.numel);
  }
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(1e-4f, 1.0f);
  std::vector<uint8_t> m_code(count), v_code(count);
  std::vector<float> m_absmax(blocks), v_absmax(blocks);
  for (uint64_t i = 0; i < count; ++i) {
    m_code[i] = uint8_t(byte(rng));
    v_code[i] = uint8_t(byte(rng));
  }
  for (uint64_t b = 0; b < blocks; ++b) {
    m_absmax[b] = scale(rng);
    v_absmax[b] = scale(rng);
  }
  std::string bytes = "STAPOADM";
  auto put = [&](const void* data, size_t n) { bytes.append(static_cast<const char*>(data), n); };
  const uint32_t header[2] = {3, 1};  // version, bytes per element; then the count, block size, 0, blocks
  const uint32_t block_header[2] = {uint32_t(kQuantBlock), 0};
  put(header, 8);
  put(&count, 8);
  put(block_header, 8);
  put(&blocks, 8);
  put(m_code.data(), count);
  put(v_code.data(), count);
  put(m_absmax.data(), blocks * 4);
  put(v_absmax.data(), blocks * 4);
  const uint64_t digest = checksum(bytes.data(), bytes.size());
  put(&digest, 8);
  const std::string v3 = dir.path + "/v3.bin";
  write_file_atomic(v3, bytes);

  Q8MomentState state;
  optimizer_state_read_q8(v3, specs, state);
  const Q8MomentLayout layout = q8_moment_layout(specs, 1);
  const QuantMap m_map = quant_map(true), v_map = quant_map(false);
  size_t code = 0, block = 0, differ = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = specs[i].numel, at = layout.offset[i];
    if (specs[i].role == ParamRole::embed) {
      ASSERT_EQ(layout.kind[i], MomentKind::fp32);
      for (size_t e = 0; e < n; ++e) {
        const size_t b = block + e / kQuantBlock;
        differ += bits_of(state.m[at + e]) != bits_of(m_map.value[m_code[code + e]] * m_absmax[b]);
        differ += bits_of(state.v[at + e]) != bits_of(v_map.value[v_code[code + e]] * v_absmax[b]);
      }
    } else {
      differ += std::memcmp(state.m_code.data() + at, m_code.data() + code, n) != 0;
      differ += std::memcmp(state.v_code.data() + at, v_code.data() + code, n) != 0;
      const size_t b = quant_blocks(n);
      differ += std::memcmp(state.m_absmax.data() + layout.block[i], m_absmax.data() + block, b * 4) != 0;
      differ += std::memcmp(state.v_absmax.data() + layout.block[i], v_absmax.data() + block, b * 4) != 0;
    }
    code += n;
    block += quant_blocks(n);
  }
  EXPECT_EQ(differ, 0u);
  EXPECT_EQ(state.m.size(), layout.fp32_elements);
  EXPECT_EQ(state.m_code.size(), layout.code_elements);

  auto model = std::make_unique<CpuModel<float>>(small_config());
  CpuEngine<float> q8(std::move(model), nullptr, true, MomentKind::q8);
  q8.load_optimizer(v3);
  q8.save_optimizer(dir.path + "/v4.bin");
  Q8MomentState again;
  optimizer_state_read_q8(dir.path + "/v4.bin", specs, again);
  EXPECT_EQ(again.m, state.m);
  EXPECT_EQ(again.v, state.v);
  EXPECT_EQ(again.m_code, state.m_code);
  EXPECT_EQ(again.v_code, state.v_code);
  EXPECT_EQ(again.m_absmax, state.m_absmax);
  EXPECT_EQ(again.v_absmax, state.v_absmax);
  CpuEngine<float> fp32(std::make_unique<CpuModel<float>>(small_config()));
  EXPECT_NE(test::error_message([&] { fp32.load_optimizer(v3); }).find("--moments 8bit"), std::string::npos);
  // A model of other tensors (tied: no lm_head) is refused by its parameter count.
  ModelConfig tied = small_config();
  tied.tie_word_embeddings = true;
  EXPECT_NE(test::error_message([&] { optimizer_state_read_q8(v3, model_param_specs(tied), state); })
                .find("the model has"),
            std::string::npos);
}

}  // namespace
}  // namespace stapo
