// kernels/swiglu.cu against model/ops/swiglu.h.
#include <string>

#include "kernels/swiglu.h"
#include "model/ops/swiglu.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct SwigluShape {
  int N, F;
};
// N·F/8 not a multiple of the 256-thread block in all but the last.
const SwigluShape kShapes[] = {{1, 8}, {37, 120}, {129, 2056}, {64, 14336}};

// Rows of `stride` columns holding two (N, F) tensors side by side: `left` in columns 0..F−1, `right` in F..2F−1
// (stride 2F, the fused gate‖up layout), or `left` alone (stride F).
std::vector<float> side_by_side(const std::vector<float>& left, const std::vector<float>& right, int N, int F,
                                int stride) {
  std::vector<float> out((size_t)N * stride);
  for (int n = 0; n < N; ++n)
    for (int f = 0; f < F; ++f) {
      out[(size_t)n * stride + f] = left[(size_t)n * F + f];
      if (stride == 2 * F) out[(size_t)n * stride + F + f] = right[(size_t)n * F + f];
    }
  return out;
}

// Columns [first, first + F) of each row of a (N, stride) tensor.
std::vector<float> columns(const std::vector<float>& x, int N, int F, int stride, int first) {
  std::vector<float> out((size_t)N * F);
  for (int n = 0; n < N; ++n)
    for (int f = 0; f < F; ++f) out[(size_t)n * F + f] = x[(size_t)n * stride + first + f];
  return out;
}

// Contiguous gate and up (stride F), and the fused layout (stride 2F, up = gate + F) that train/cuda_model.h's
// fused projections use.
TEST(KernelSwiglu, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& s : kShapes)
    for (const bool fused : {false, true}) {
      const size_t n = (size_t)s.N * s.F;
      const int stride = fused ? 2 * s.F : s.F;
      const std::string where = " N=" + std::to_string(s.N) + " F=" + std::to_string(s.F) +
                                (fused ? " gate‖up" : "");
      auto gate = round_bf16(random_normal(n, 2.0f, s.F));
      auto up = round_bf16(random_normal(n, 1.0f, s.F + 1));
      auto dout = round_bf16(random_normal(n, 1.0f, s.F + 2));
      std::vector<float> ref(n), ref_dgate(n), ref_dup(n);
      swiglu_forward(ref.data(), gate.data(), up.data(), s.N, s.F);
      swiglu_backward(ref_dgate.data(), ref_dup.data(), dout.data(), gate.data(), up.data(), s.N, s.F);

      // Fused: one buffer for gate‖up and one for dgate‖dup; else four, the second of each pair filled below.
      auto d_gate = device_bf16(side_by_side(gate, up, s.N, s.F, stride));
      auto d_up = fused ? nullptr : device_bf16(up);
      auto d_dout = device_bf16(dout);
      DeviceArray<bf16> d_out(n), d_dgate((size_t)s.N * stride), d_dup(fused ? 0 : n);
      bf16* up_at = fused ? d_gate->get() + s.F : d_up->get();
      bf16* dup_at = fused ? d_dgate.get() + s.F : d_dup.get();
      swiglu_forward(d_out.get(), d_gate->get(), up_at, s.N, s.F, stride, 0);
      swiglu_backward(d_dgate.get(), dup_at, d_dout->get(), d_gate->get(), up_at, s.N, s.F, stride, 0);
      const std::vector<float> dgate_all = download_bf16(d_dgate);
      const std::vector<float> dup = fused ? columns(dgate_all, s.N, s.F, stride, s.F) : download_bf16(d_dup);
      EXPECT_TRUE(bf16_close(download_bf16(d_out), ref, 1e-2)) << "out" << where;
      EXPECT_TRUE(bf16_close(columns(dgate_all, s.N, s.F, stride, 0), ref_dgate, 1e-2)) << "dgate" << where;
      EXPECT_TRUE(bf16_close(dup, ref_dup, 1e-2)) << "dup" << where;
    }
}

TEST(KernelSwiglu, RejectsStrideBelowF) {
  EXPECT_THROW(swiglu_forward(nullptr, nullptr, nullptr, 1, 16, 8, 0), Error);
}

}  // namespace
}  // namespace stapo::test
