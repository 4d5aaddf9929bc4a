// kernels/rope.cu against model/ops/rope.h, plain and with Llama 3 scaling, positions restarting per sequence.
#include <random>

#include "kernels/rope.h"
#include "model/ops/rope.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct RopeCase {
  int N, nh, D;
  bool llama3;
};
const RopeCase kCases[] = {{1, 1, 16, false}, {67, 3, 64, true}, {130, 8, 128, true}, {33, 5, 128, false}};

// Packed sequences: positions count up and restart at random points, reaching past 8192 (llama3's context).
std::vector<int32_t> packed_positions(int N, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::uniform_int_distribution<int32_t> start(0, 9000), restart(0, 9);
  std::vector<int32_t> pos(N);
  int32_t p = start(rng);
  for (int i = 0; i < N; ++i) {
    if (restart(rng) == 0) p = 0;
    pos[i] = p++;
  }
  return pos;
}

std::vector<float> inv_freq_for(const RopeCase& c) {
  RopeScaling scaling;
  if (c.llama3) {
    scaling.llama3 = true;
    scaling.factor = 8.0;
    scaling.low_freq_factor = 1.0;
    scaling.high_freq_factor = 4.0;
    scaling.original_max_position_embeddings = 8192;
  }
  return rope_inv_freq<float>(c.D, 500000.0, scaling);
}

TEST(KernelRope, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& c : kCases) {
    const size_t n = (size_t)c.N * c.nh * c.D;
    auto x = round_bf16(random_normal(n, 1.0f, c.D + c.N));
    auto positions = packed_positions(c.N, c.nh);
    auto inv_freq = inv_freq_for(c);
    DeviceArray<int32_t> d_positions(positions);
    DeviceArray<float> d_inv_freq(inv_freq);

    std::vector<float> ref = x;
    rope_forward(ref.data(), positions.data(), inv_freq.data(), c.N, c.nh, c.D);
    auto d_x = device_bf16(x);
    rope_forward(d_x->get(), d_positions.get(), d_inv_freq.get(), c.N, c.nh, c.D, 0);
    EXPECT_TRUE(bf16_close(download_bf16(*d_x), ref, 1e-2)) << "forward N=" << c.N << " D=" << c.D;

    std::vector<float> ref_back = x;
    rope_backward(ref_back.data(), positions.data(), inv_freq.data(), c.N, c.nh, c.D);
    auto d_dx = device_bf16(x);
    rope_backward(d_dx->get(), d_positions.get(), d_inv_freq.get(), c.N, c.nh, c.D, 0);
    EXPECT_TRUE(bf16_close(download_bf16(*d_dx), ref_back, 1e-2)) << "backward N=" << c.N << " D=" << c.D;
  }
}

TEST(KernelRope, RejectsHeadDimNotMultipleOf16) {
  EXPECT_THROW(rope_forward(nullptr, nullptr, nullptr, 1, 1, 24, 0), Error);
}

}  // namespace
}  // namespace stapo::test
