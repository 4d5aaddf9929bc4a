// kernels/rope.cu against model/ops/rope.h, plain and with Llama 3 scaling, positions restarting per sequence.
#include <algorithm>
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

// The *_rows forms as the fused q‖k‖v projection uses them: from rows of q‖k‖v (stride (nh + 2)·D) into a (N, nh, D)
// buffer and back into those rows, each matching the in-place CPU rotation.
TEST(KernelRope, StridedRowsMatchCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& c : kCases) {
    const size_t per_token = (size_t)c.nh * c.D, wide = per_token + 2 * (size_t)c.D, n = (size_t)c.N * per_token;
    auto rows = round_bf16(random_normal((size_t)c.N * wide, 1.0f, c.D + c.N + 1));
    std::vector<float> x(n);  // the nh heads of each row, where the CPU twin rotates them
    for (int t = 0; t < c.N; ++t)
      std::copy_n(rows.begin() + (ptrdiff_t)(t * wide), per_token, x.begin() + (ptrdiff_t)(t * per_token));
    auto positions = packed_positions(c.N, c.nh + 1);
    auto inv_freq = inv_freq_for(c);
    DeviceArray<int32_t> d_positions(positions);
    DeviceArray<float> d_inv_freq(inv_freq);
    auto d_rows = device_bf16(rows);
    DeviceArray<bf16> d_heads(n);

    std::vector<float> ref = x;
    rope_forward(ref.data(), positions.data(), inv_freq.data(), c.N, c.nh, c.D);
    rope_forward_rows(d_heads.get(), per_token, d_rows->get(), wide, d_positions.get(), d_inv_freq.get(), c.N, c.nh,
                      c.D, 0);
    EXPECT_TRUE(bf16_close(download_bf16(d_heads), ref, 1e-2)) << "forward N=" << c.N << " D=" << c.D;

    std::vector<float> ref_back = x;
    rope_backward(ref_back.data(), positions.data(), inv_freq.data(), c.N, c.nh, c.D);
    auto d_x = device_bf16(x);
    rope_backward_rows(d_rows->get(), wide, d_x->get(), per_token, d_positions.get(), d_inv_freq.get(), c.N, c.nh,
                       c.D, 0);
    const std::vector<float> back = download_bf16(*d_rows);
    std::vector<float> got(n);
    for (int t = 0; t < c.N; ++t)
      std::copy_n(back.begin() + (ptrdiff_t)(t * wide), per_token, got.begin() + (ptrdiff_t)(t * per_token));
    EXPECT_TRUE(bf16_close(got, ref_back, 1e-2)) << "backward N=" << c.N << " D=" << c.D;
    // The columns past the heads are not the rotation's: they keep their values.
    for (int t = 0; t < c.N; ++t)
      for (size_t e = per_token; e < wide; ++e)
        ASSERT_EQ(back[t * wide + e], rows[t * wide + e]) << "row " << t << " column " << e << " was written";
  }
}

TEST(KernelRope, RejectsHeadDimNotMultipleOf16) {
  EXPECT_THROW(rope_forward(nullptr, nullptr, nullptr, 1, 1, 24, 0), Error);
}

TEST(KernelRope, RejectsRowStrideBelowHeads) {
  EXPECT_THROW(rope_forward_rows(nullptr, 64, nullptr, 48, nullptr, nullptr, 1, 1, 64, 0), Error);
}

}  // namespace
}  // namespace stapo::test
