// kernels/swiglu.cu against model/ops/swiglu.h.
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

TEST(KernelSwiglu, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    const size_t n = (size_t)s.N * s.F;
    auto gate = round_bf16(random_normal(n, 2.0f, s.F));
    auto up = round_bf16(random_normal(n, 1.0f, s.F + 1));
    auto dout = round_bf16(random_normal(n, 1.0f, s.F + 2));
    std::vector<float> ref(n), ref_dgate(n), ref_dup(n);
    swiglu_forward(ref.data(), gate.data(), up.data(), s.N, s.F);
    swiglu_backward(ref_dgate.data(), ref_dup.data(), dout.data(), gate.data(), up.data(), s.N, s.F);

    auto d_gate = device_bf16(gate), d_up = device_bf16(up), d_dout = device_bf16(dout);
    DeviceArray<bf16> d_out(n), d_dgate(n), d_dup(n);
    swiglu_forward(d_out.get(), d_gate->get(), d_up->get(), s.N, s.F, 0);
    swiglu_backward(d_dgate.get(), d_dup.get(), d_dout->get(), d_gate->get(), d_up->get(), s.N, s.F, 0);
    EXPECT_TRUE(bf16_close(download_bf16(d_out), ref, 1e-2)) << "out N=" << s.N << " F=" << s.F;
    EXPECT_TRUE(bf16_close(download_bf16(d_dgate), ref_dgate, 1e-2)) << "dgate N=" << s.N << " F=" << s.F;
    EXPECT_TRUE(bf16_close(download_bf16(d_dup), ref_dup, 1e-2)) << "dup N=" << s.N << " F=" << s.F;
  }
}

}  // namespace
}  // namespace stapo::test
