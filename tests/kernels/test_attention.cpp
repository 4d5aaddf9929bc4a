// kernels/attention.cu (SIMT) and kernels/attention_flash2.cu (tensor cores) against model/ops/attention.h, on
// tests/kernels/attention_cases.h: causal, GQA, sliding window, packed rows and padding, sequence lengths that
// are not multiples of the tiles.
#include <cmath>
#include <limits>
#include <ostream>

#include "kernels/attention.h"
#include "model/ops/attention.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/attention_cases.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

// The implementations behind kernels/attention.h's one interface: the SIMT kernels (attention_forward /
// attention_backward), the tensor-core ones (attention_flash2_*, the trainer's default), the tensor cores with
// the atomic backward (attention_flash2_backward_atomic, its own scratch size) and on 32-row tiles
// (attention_flash2_narrow_*).
struct AttentionKernels {
  const char* name;
  void (*forward)(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttentionShape& shape,
                  const int32_t* segments, cudaStream_t stream);
  void (*backward)(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out, const float* lse,
                   const bf16* q, const bf16* k, const bf16* v, const AttentionShape& shape, const int32_t* segments,
                   cudaStream_t stream);
  size_t (*scratch_floats)(const AttentionShape& shape);
};
// ctest lists the parameter by name.
void PrintTo(const AttentionKernels& kernels, std::ostream* os) { *os << kernels.name; }

class KernelAttention : public ::testing::TestWithParam<AttentionKernels> {};

TEST_P(KernelAttention, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  const AttentionKernels kernels = GetParam();
  uint64_t salt = 0;
  for (const auto& c : attention_cases()) {
    const AttentionShape& s = c.shape;
    const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
    auto q = round_bf16(random_normal(nq, 1.0f, ++salt));
    auto k = round_bf16(random_normal(nkv, 1.0f, ++salt));
    auto v = round_bf16(random_normal(nkv, 1.0f, ++salt));
    auto dout = round_bf16(random_normal(nq, 1.0f, ++salt));
    auto segments = packed_segments(c);

    std::vector<float> ref_out(nq), ref_lse(N * s.H), ref_dq(nq), ref_dk(nkv), ref_dv(nkv);
    attention_forward(ref_out.data(), ref_lse.data(), q.data(), k.data(), v.data(), s, segments.data());
    attention_backward(ref_dq.data(), ref_dk.data(), ref_dv.data(), dout.data(), ref_out.data(), ref_lse.data(),
                       q.data(), k.data(), v.data(), s, segments.data());

    auto d_q = device_bf16(q), d_k = device_bf16(k), d_v = device_bf16(v), d_dout = device_bf16(dout);
    DeviceArray<int32_t> d_segments(segments);
    DeviceArray<bf16> d_out(nq), d_dq(nq), d_dk(nkv), d_dv(nkv);
    DeviceArray<float> d_lse(N * s.H), d_scratch(kernels.scratch_floats(s));
    kernels.forward(d_out.get(), d_lse.get(), d_q->get(), d_k->get(), d_v->get(), s, d_segments.get(), 0);
    EXPECT_TRUE(bf16_close(download_bf16(d_out), ref_out, 1e-2)) << "out " << describe(s);
    EXPECT_TRUE(all_close(finite_lse(d_lse.download()), finite_lse(ref_lse), 1e-4, 1e-4)) << "lse " << describe(s);

    // The backward takes the GPU forward's own out and lse, as the trainer will.
    kernels.backward(d_dq.get(), d_dk.get(), d_dv.get(), d_scratch.get(), d_dout->get(), d_out.get(), d_lse.get(),
                     d_q->get(), d_k->get(), d_v->get(), s, d_segments.get(), 0);
    // A query that sees a single key has dq = 0 and gives that key dk = 0 exactly (softmax over one score has no
    // gradient); on the GPU dP − D cancels to fp32 rounding there (~1e-8 seen on an H100), so those tensors are
    // judged on a scale well under the call's gradients: 1e-3 of rms(dv).
    const double cancel_scale = 1e-3 * rms(ref_dv);
    EXPECT_TRUE(bf16_close(download_bf16(d_dq), ref_dq, 2e-2, cancel_scale)) << "dq " << describe(s);
    EXPECT_TRUE(bf16_close(download_bf16(d_dk), ref_dk, 2e-2, cancel_scale)) << "dk " << describe(s);
    EXPECT_TRUE(bf16_close(download_bf16(d_dv), ref_dv, 2e-2)) << "dv " << describe(s);
  }
}

// Structured: q = 0 makes every visible key equally likely, so out_i is the plain mean of the visible v_j and
// lse_i = log(count): exact expectations that show a masking error directly (here per query, not as a norm).
TEST_P(KernelAttention, ZeroQueriesAverageExactlyTheVisibleValues) {
  STAPO_REQUIRE_GPU();
  const AttentionCase c{{2, 150, 2, 1, 64, 50}, {70, 60}};  // window 50, two sequences, 20 padding positions
  const AttentionShape& s = c.shape;
  const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
  auto v = round_bf16(random_uniform(nkv, -1, 1, 1));
  auto segments = packed_segments(c);
  std::vector<float> want(nq, 0.0f), want_lse(N * s.H, -INFINITY);
  for (int r = 0; r < s.rows; ++r)
    for (int i = 0; i < s.T; ++i) {
      const size_t qi = (size_t)r * s.T + i;
      if (segments[qi] < 0) continue;
      int count = 0;
      std::vector<double> sum(s.D, 0.0);
      for (int j = 0; j <= i; ++j) {
        const size_t kj = (size_t)r * s.T + j;
        if (segments[kj] != segments[qi] || i - j >= s.window) continue;
        ++count;
        for (int d = 0; d < s.D; ++d) sum[d] += v[kj * s.D + d];
      }
      for (int h = 0; h < s.H; ++h) {
        want_lse[qi * s.H + h] = std::log((float)count);
        for (int d = 0; d < s.D; ++d) want[(qi * s.H + h) * s.D + d] = (float)(sum[d] / count);
      }
    }
  auto d_q = device_bf16(std::vector<float>(nq, 0.0f)), d_k = device_bf16(random_uniform(nkv, -1, 1, 2)),
       d_v = device_bf16(v);
  DeviceArray<int32_t> d_segments(segments);
  DeviceArray<bf16> d_out(nq);
  DeviceArray<float> d_lse(N * s.H);
  GetParam().forward(d_out.get(), d_lse.get(), d_q->get(), d_k->get(), d_v->get(), s, d_segments.get(), 0);
  // bf16 output: one rounding of the exact mean.
  EXPECT_TRUE(all_close(download_bf16(d_out), want, 1e-5, 4e-3));
  EXPECT_TRUE(all_close(finite_lse(d_lse.download()), finite_lse(want_lse), 1e-5, 1e-5));
}

TEST_P(KernelAttention, RejectsUnsupportedShapes) {
  const AttentionKernels kernels = GetParam();
  EXPECT_THROW(kernels.forward(nullptr, nullptr, nullptr, nullptr, nullptr, {1, 8, 4, 4, 96, 0}, nullptr, 0), Error);
  EXPECT_THROW(kernels.forward(nullptr, nullptr, nullptr, nullptr, nullptr, {1, 8, 6, 4, 64, 0}, nullptr, 0), Error);
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, KernelAttention,
    ::testing::Values(
        AttentionKernels{"simt", attention_forward, attention_backward, attention_backward_scratch_floats},
        AttentionKernels{"flash2", attention_flash2_forward, attention_flash2_backward,
                         attention_backward_scratch_floats},
        AttentionKernels{"flash2_atomic", attention_flash2_forward, attention_flash2_backward_atomic,
                         attention_flash2_backward_atomic_scratch_floats},
        AttentionKernels{"flash2_narrow", attention_flash2_narrow_forward, attention_flash2_narrow_backward,
                         attention_backward_scratch_floats}),
                         [](const ::testing::TestParamInfo<AttentionKernels>& info) { return info.param.name; });

// The atomic backward against the deterministic one on the same inputs (the forward's own out and lse), twice:
// dk and dv are the same code in both (equal to fp32 rounding), dq one bf16 rounding of sums in another order, and
// the second atomic call agrees with the first as closely (its accumulator zeroed again, not summed onto).
TEST(KernelAttentionAtomic, MatchesTheDeterministicBackward) {
  STAPO_REQUIRE_GPU();
  uint64_t salt = 300;
  for (const auto& c : attention_cases()) {
    const AttentionShape& s = c.shape;
    const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
    auto d_q = device_bf16(random_normal(nq, 1.0f, ++salt)), d_k = device_bf16(random_normal(nkv, 1.0f, ++salt)),
         d_v = device_bf16(random_normal(nkv, 1.0f, ++salt)), d_dout = device_bf16(random_normal(nq, 1.0f, ++salt));
    DeviceArray<int32_t> d_segments(packed_segments(c));
    DeviceArray<bf16> d_out(nq);
    DeviceArray<float> d_lse(N * s.H), d_scratch(attention_backward_scratch_floats(s)),
        d_atomic_scratch(attention_flash2_backward_atomic_scratch_floats(s));
    attention_flash2_forward(d_out.get(), d_lse.get(), d_q->get(), d_k->get(), d_v->get(), s, d_segments.get(), 0);
    std::vector<float> want[3], got[2][3];
    {
      DeviceArray<bf16> dq(nq), dk(nkv), dv(nkv);
      attention_flash2_backward(dq.get(), dk.get(), dv.get(), d_scratch.get(), d_dout->get(), d_out.get(), d_lse.get(),
                                d_q->get(), d_k->get(), d_v->get(), s, d_segments.get(), 0);
      want[0] = download_bf16(dq);
      want[1] = download_bf16(dk);
      want[2] = download_bf16(dv);
    }
    for (auto& run : got) {
      DeviceArray<bf16> dq(nq), dk(nkv), dv(nkv);
      attention_flash2_backward_atomic(dq.get(), dk.get(), dv.get(), d_atomic_scratch.get(), d_dout->get(),
                                       d_out.get(), d_lse.get(), d_q->get(), d_k->get(), d_v->get(), s,
                                       d_segments.get(), 0);
      run[0] = download_bf16(dq);
      run[1] = download_bf16(dk);
      run[2] = download_bf16(dv);
    }
    const double cancel_scale = 1e-3 * rms(want[2]);  // single-key queries: dq and dk are rounding residue
    const char* names[3] = {"dq", "dk", "dv"};
    for (int t = 0; t < 3; ++t)
      for (const auto& run : got)
        EXPECT_TRUE(bf16_close(run[t], want[t], 1e-2, t < 2 ? cancel_scale : 0.0)) << names[t] << " " << describe(s);
  }
}

}  // namespace
}  // namespace stapo::test
