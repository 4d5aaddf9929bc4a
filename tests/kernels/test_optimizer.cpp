// kernels/grad_norm.cu against its CPU twin in train/grad_clip.h, run in double. (AdamW's kernel,
// kernels/adamw_compact.cu, is tested against its CPU twin in test_adamw_compact.cpp.)
#include <cmath>
#include <iterator>

#include "kernels/grad_norm.h"
#include "tests/gpu_test_util.h"
#include "train/grad_clip.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

TEST(KernelGradNorm, NormOverSeveralTensorsAndClipScale) {
  STAPO_REQUIRE_GPU();
  // Sizes with every n % 4 tail, one smaller than a block, one that the grid's first round of unrolled loads
  // covers but for part of its last load, one that takes several rounds. fp32 gradients (as accumulated over
  // micro-batches), so the norm is checked to fp32 summation error.
  const size_t sizes[] = {1, 6, 1003, 1000004, 5000011};
  std::vector<std::unique_ptr<DeviceArray<float>>> grads;
  double total = 0;
  for (size_t i = 0; i < std::size(sizes); ++i) {
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

}  // namespace
}  // namespace stapo::test
