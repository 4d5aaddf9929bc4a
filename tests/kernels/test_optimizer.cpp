// kernels/grad_norm.cu and kernels/adamw.cu against their CPU twins in train/ (grad_clip.h, adamw.h), run in
// double.
#include <cmath>
#include <cstring>

#include "kernels/adamw.h"
#include "kernels/grad_norm.h"
#include "tests/gpu_test_util.h"
#include "train/adamw.h"
#include "train/grad_clip.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

TEST(KernelGradNorm, NormOverSeveralTensorsAndClipScale) {
  STAPO_REQUIRE_GPU();
  // Sizes with every n % 4 tail, one smaller than a block, one larger than the whole grid. fp32 gradients (as
  // accumulated over micro-batches), so the norm is checked to fp32 summation error.
  const size_t sizes[] = {1, 7, 1003, 1000003};
  std::vector<std::unique_ptr<DeviceArray<float>>> grads;
  double total = 0;
  for (size_t i = 0; i < 4; ++i) {
    auto g = random_normal(sizes[i], 0.01f, i);
    total += grad_sum_squares(g.data(), g.size());
    grads.push_back(std::make_unique<DeviceArray<float>>(g));
  }
  const double norm = std::sqrt(total);
  DeviceArray<float> partials(GRAD_NORM_BLOCKS), d_norm(1), d_scale(1);
  DeviceArray<int> d_apply(1), d_nonfinite_loss(std::vector<int>{0});
  for (float max_norm : {0.0f, (float)(norm / 3), (float)(norm * 2)}) {
    d_norm.poison();
    d_scale.poison();
    d_apply.poison();
    for (size_t i = 0; i < grads.size(); ++i)
      grad_norm_accumulate(partials.get(), grads[i]->get(), sizes[i], i > 0, 0);
    grad_norm_finish(d_norm.get(), d_scale.get(), d_apply.get(), partials.get(), max_norm, d_nonfinite_loss.get(), 0);
    const float want_scale = (float)grad_clip_factor(norm, max_norm);
    EXPECT_TRUE(all_close(d_norm.download(), {(float)norm}, 0, 1e-5)) << "max_norm " << max_norm;
    EXPECT_TRUE(all_close(d_scale.download(), {want_scale}, 0, 1e-5)) << "max_norm " << max_norm;
    EXPECT_EQ(d_apply.download()[0], 1) << "max_norm " << max_norm;
  }
}

// bf16 gradients (--grads bf16) added to an fp32 tensor's partial sums: the norm of both, to fp32 summation error
// over the bf16 values.
TEST(KernelGradNorm, Bf16GradientsAddToTheSameNorm) {
  STAPO_REQUIRE_GPU();
  const std::vector<float> g32 = random_normal(1003, 0.01f, 11), g16 = round_bf16(random_normal(1000003, 0.01f, 12));
  const double norm = std::sqrt(grad_sum_squares(g32.data(), g32.size()) + grad_sum_squares(g16.data(), g16.size()));
  DeviceArray<float> d32(g32), partials(GRAD_NORM_BLOCKS), d_norm(1), d_scale(1);
  DeviceArray<int> d_apply(1);
  const auto d16 = device_bf16(g16);
  grad_norm_accumulate(partials.get(), d32.get(), g32.size(), false, 0);
  grad_norm_accumulate(partials.get(), d16->get(), g16.size(), true, 0);
  grad_norm_finish(d_norm.get(), d_scale.get(), d_apply.get(), partials.get(), 0.0f, nullptr, 0);
  EXPECT_TRUE(all_close(d_norm.download(), {(float)norm}, 0, 1e-5));
  EXPECT_EQ(d_apply.download()[0], 1);
}

// The decision to update: 0 for a norm that is not finite (one NaN or inf gradient) and for a step whose loss was
// not finite (the flag pair_loss sets), as the CPU engine's optimizer_step decides; the clip scale is then 1, as
// train/grad_clip.h's grad_clip_factor gives for a norm that is not finite.
TEST(KernelGradNorm, ApplyIsZeroForNonFiniteNormOrLoss) {
  STAPO_REQUIRE_GPU();
  std::vector<float> g = random_normal(1003, 0.01f, 5);
  DeviceArray<float> partials(GRAD_NORM_BLOCKS), d_norm(1), d_scale(1);
  DeviceArray<int> d_apply(1), d_flag(1);
  struct Case {
    const char* what;
    float bad_gradient;  // written at index 500 (0: none)
    int nonfinite_loss;
    int want_apply;
  };
  const Case cases[] = {{"finite", 0.0f, 0, 1},
                        {"inf gradient", INFINITY, 0, 0},
                        {"NaN gradient", NAN, 0, 0},
                        {"non-finite loss", 0.0f, 1, 0}};
  for (const Case& c : cases) {
    std::vector<float> x = g;
    if (c.bad_gradient != 0.0f) x[500] = c.bad_gradient;
    DeviceArray<float> d_g(x);
    d_flag.upload({c.nonfinite_loss});
    d_apply.poison();
    d_scale.poison();
    grad_norm_accumulate(partials.get(), d_g.get(), x.size(), false, 0);
    grad_norm_finish(d_norm.get(), d_scale.get(), d_apply.get(), partials.get(), 1e-4f, d_flag.get(), 0);
    EXPECT_EQ(d_apply.download()[0], c.want_apply) << c.what;
    const float norm = d_norm.download()[0];
    EXPECT_EQ(std::isfinite(norm), c.bad_gradient == 0.0f) << c.what;
    const float want_scale = (float)grad_clip_factor(norm, 1e-4);
    EXPECT_TRUE(all_close(d_scale.download(), {want_scale}, 0, 1e-5)) << c.what;
  }
}

struct AdamWState {
  std::vector<float> params, grads, m, v;
};

AdamWState random_state(size_t n) {
  AdamWState s;
  s.params = round_bf16(random_normal(n, 1.0f, 1));
  s.grads = random_normal(n, 0.1f, 2);  // fp32, as accumulated
  s.m = random_normal(n, 0.01f, 3);
  s.v = random_uniform(n, 0.0f, 1e-3f, 4);
  return s;
}

// The CPU twin in double; returns the new parameters and updates m, v.
std::vector<double> adamw_reference(AdamWState& s, const AdamWHyper& hyper, int step, double clip) {
  std::vector<double> p(s.params.begin(), s.params.end()), g(s.grads.begin(), s.grads.end());
  std::vector<double> m(s.m.begin(), s.m.end()), v(s.v.begin(), s.v.end());
  AdamWConfig config;
  config.beta1 = hyper.beta1;
  config.beta2 = hyper.beta2;
  config.eps = hyper.eps;
  adamw_update(p.data(), g.data(), m.data(), v.data(), p.size(), (double)hyper.lr, (double)hyper.weight_decay, config,
               step, clip);
  s.m.assign(m.begin(), m.end());
  s.v.assign(v.begin(), v.end());
  return p;
}

AdamWHyper test_hyper() {
  AdamWHyper hyper;
  hyper.lr = 1e-3f;
  hyper.weight_decay = 0.1f;
  return hyper;
}

TEST(KernelAdamW, MasterWeightsMatchTorchFormula) {
  STAPO_REQUIRE_GPU();
  const size_t n = 100003;
  for (int step : {1, 7}) {
    AdamWState s = random_state(n);
    auto d_params = device_bf16(s.params);
    DeviceArray<float> d_grads(s.grads), d_master(s.params), d_m(s.m), d_v(s.v), d_clip(std::vector<float>{0.5f});
    DeviceArray<int> d_apply(std::vector<int>{1});
    d_params->poison();  // every element must be rewritten from the master copy
    const AdamWHyper hyper = test_hyper();
    adamw_update(d_params->get(), d_master.get(), d_grads.get(), d_m.get(), d_v.get(), n, hyper, step, d_clip.get(),
                 d_apply.get(), 0, 0);
    auto want = adamw_reference(s, hyper, step, 0.5);
    std::vector<float> want_f(want.begin(), want.end());
    EXPECT_TRUE(all_close(d_master.download(), want_f, 1e-7, 1e-6)) << "step " << step;
    EXPECT_TRUE(all_close(download_bf16(*d_params), round_bf16(want_f), 0, 8e-3)) << "step " << step;
    EXPECT_TRUE(all_close(d_m.download(), s.m, 1e-8, 1e-5)) << "step " << step;
    EXPECT_TRUE(all_close(d_v.download(), s.v, 1e-10, 1e-5)) << "step " << step;
  }
}

// bf16-only mode: each result is one of the two bf16 neighbours of the exact update, and it goes away from zero
// with probability f, its distance from the neighbour toward zero in ulps. Round-to-nearest would give 0 for
// every f < 1/2 and 1 above, so the rate is checked in each half separately (within 5 standard deviations).
TEST(KernelAdamW, StochasticRoundingIsUnbiased) {
  STAPO_REQUIRE_GPU();
  const size_t n = 1 << 20;
  AdamWState s = random_state(n);
  auto d_params = device_bf16(s.params);
  DeviceArray<float> d_grads(s.grads), d_m(s.m), d_v(s.v);
  const AdamWHyper hyper = test_hyper();
  adamw_update(d_params->get(), nullptr, d_grads.get(), d_m.get(), d_v.get(), n, hyper, 3, nullptr, nullptr, 1234u, 0);
  auto want = adamw_reference(s, hyper, 3, 1.0);
  auto got = download_bf16(*d_params);
  struct Half {
    double count = 0, away = 0, expected = 0, variance = 0;
  } halves[2];
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float exact = (float)want[i];
    // Neighbours of the exact value: truncation toward zero and one bf16 ulp further from zero.
    const uint32_t bits = [&] { uint32_t b; std::memcpy(&b, &exact, 4); return b & 0xFFFF0000u; }();
    float low, high;
    const uint32_t next = bits + 0x10000u;
    std::memcpy(&low, &bits, 4);
    std::memcpy(&high, &next, 4);
    const double ulp = std::fabs((double)high - low);
    // A neighbour of the GPU's own fp32 update, which may sit a few fp32 ulps across a bf16 boundary.
    if (std::fabs(got[i] - want[i]) > ulp * 1.001) ++bad;
    const double f = std::fabs(want[i] - low) / ulp;
    Half& h = halves[f < 0.5 ? 0 : 1];
    h.count += 1;
    h.away += std::fabs((double)got[i] - low) > 0.5 * ulp;
    h.expected += f;
    h.variance += f * (1 - f);
  }
  EXPECT_EQ(bad, 0u) << "results that are not a bf16 neighbour of the fp32 update";
  for (int k = 0; k < 2; ++k) {
    const Half& h = halves[k];
    ASSERT_GT(h.count, 1000) << "too few updates with f " << (k ? ">= 0.5" : "< 0.5") << " to test";
    EXPECT_NEAR(h.away / h.count, h.expected / h.count, 5 * std::sqrt(h.variance) / h.count + 1e-4)
        << "rate of rounding away from zero, f " << (k ? ">= 0.5" : "< 0.5");
  }
}

// apply = 0 (a step whose norm or loss was not finite): weights, master weights and moments stay exactly as
// they were, in both storage modes.
TEST(KernelAdamW, ApplyZeroLeavesEverythingUntouched) {
  STAPO_REQUIRE_GPU();
  const size_t n = 4099;
  AdamWState s = random_state(n);
  for (bool with_master : {true, false}) {
    auto d_params = device_bf16(s.params);
    DeviceArray<float> d_grads(s.grads), d_master(s.params), d_m(s.m), d_v(s.v);
    DeviceArray<int> d_apply(std::vector<int>{0});
    adamw_update(d_params->get(), with_master ? d_master.get() : nullptr, d_grads.get(), d_m.get(), d_v.get(), n,
                 test_hyper(), 2, nullptr, d_apply.get(), 99u, 0);
    const char* mode = with_master ? "fp32 master" : "bf16 + SR";
    EXPECT_TRUE(all_close(download_bf16(*d_params), s.params, 0, 0)) << mode;
    EXPECT_TRUE(all_close(d_master.download(), s.params, 0, 0)) << mode;
    EXPECT_TRUE(all_close(d_m.download(), s.m, 0, 0)) << mode;
    EXPECT_TRUE(all_close(d_v.download(), s.v, 0, 0)) << mode;
  }
}

}  // namespace
}  // namespace stapo::test
