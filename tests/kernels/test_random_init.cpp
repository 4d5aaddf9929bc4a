// kernels/random_init.cu: weights drawn on the device for benchmarks (no CPU twin: their statistics are checked).
#include <cmath>

#include "kernels/random_init.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

// N(mean, stddev) by a hash: the moments of a million draws within 6 standard errors, the same values for the
// same seed and other ones for another, and stddev 0 filling the mean exactly (RMSNorm weights).
TEST(KernelRandomInit, NormalMomentsAndDeterminism) {
  STAPO_REQUIRE_GPU();
  const size_t n = 1000003;
  DeviceArray<float> a(n), b(n), c(n);
  random_normal_fill(a.get(), n, 0.5f, 0.02f, 42, 0);
  random_normal_fill(b.get(), n, 0.5f, 0.02f, 42, 0);
  random_normal_fill(c.get(), n, 0.5f, 0.02f, 43, 0);
  const std::vector<float> x = a.download(), y = b.download(), z = c.download();
  double sum = 0, sum_sq = 0, sum_4 = 0;
  for (float v : x) {
    const double d = v - 0.5;
    sum += d;
    sum_sq += d * d;
    sum_4 += d * d * d * d;
  }
  const double mean = sum / n, var = sum_sq / n;
  EXPECT_NEAR(mean, 0.0, 6 * 0.02 / std::sqrt((double)n));
  EXPECT_NEAR(std::sqrt(var), 0.02, 6 * 0.02 / std::sqrt(2.0 * n));
  EXPECT_NEAR(sum_4 / n / (var * var), 3.0, 0.05) << "kurtosis of a normal";
  EXPECT_TRUE(all_close(x, y, 0, 0)) << "same seed, same values";
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) same += x[i] == z[i];
  EXPECT_LT(same, n / 1000) << "another seed, other values";
  random_normal_fill(a.get(), n, 1.0f, 0.0f, 42, 0);
  EXPECT_TRUE(all_close(a.download(), std::vector<float>(n, 1.0f), 0, 0));
}

}  // namespace
}  // namespace stapo::test
