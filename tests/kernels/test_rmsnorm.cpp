// kernels/rmsnorm.cu (fused residual add) against model/ops/rmsnorm.h.
#include "kernels/rmsnorm.h"
#include "model/ops/rmsnorm.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct RmsShape {
  int N, C;
};
// C = 8 (one thread), 200 and 1032 (partial warps / slices), 4096 (Llama), 8200 (> 8·4·256: 257 threads
// round up to 288), 16384 (the widest: 512 threads); N beyond the 264 backward blocks so blocks take
// several rows.
// 2048 (Llama 3.2 1B) over many rows: the warp kernel's 8 slices per lane, blocks of 4 rows taking several.
const RmsShape kShapes[] = {{1, 8},    {3, 200},     {77, 1032}, {300, 4096}, {5, 8200},
                            {600, 64}, {2, 16384}, {1500, 2048}, {9, 520}};
const float kEps = 1e-5f;

TEST(KernelRmsnorm, ForwardWithResidualMatchesCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    const size_t n = (size_t)s.N * s.C;
    auto residual = round_bf16(random_normal(n, 1.0f, s.C));
    auto delta = round_bf16(random_normal(n, 0.5f, s.C + 1));
    auto weight = round_bf16(random_uniform(s.C, 0.5f, 1.5f, s.C + 2));
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = residual[i] + delta[i];
    x = round_bf16(x);
    std::vector<float> ref(n), ref_rstd(s.N);
    rmsnorm_forward(ref.data(), ref_rstd.data(), x.data(), weight.data(), s.N, s.C, kEps);

    auto d_residual = device_bf16(residual), d_delta = device_bf16(delta), d_weight = device_bf16(weight);
    DeviceArray<bf16> d_out(n), d_residual_out(n);
    DeviceArray<float> d_rstd(s.N);
    rmsnorm_forward(d_out.get(), d_rstd.get(), d_residual_out.get(), d_residual->get(), d_delta->get(),
                    d_weight->get(), s.N, s.C, kEps, 0);
    EXPECT_TRUE(all_close(download_bf16(d_residual_out), x, 0, 0)) << "N=" << s.N << " C=" << s.C;
    EXPECT_TRUE(bf16_close(download_bf16(d_out), ref, 1e-2)) << "N=" << s.N << " C=" << s.C;
    EXPECT_TRUE(all_close(d_rstd.download(), ref_rstd, 0, 1e-4)) << "N=" << s.N << " C=" << s.C;

    // Without delta the input is normalised as is.
    std::vector<float> ref_plain(n);
    rmsnorm_forward(ref_plain.data(), ref_rstd.data(), residual.data(), weight.data(), s.N, s.C, kEps);
    d_out.poison();
    d_rstd.poison();
    rmsnorm_forward(d_out.get(), d_rstd.get(), nullptr, d_residual->get(), nullptr, d_weight->get(), s.N, s.C, kEps,
                    0);
    EXPECT_TRUE(bf16_close(download_bf16(d_out), ref_plain, 1e-2)) << "no delta, N=" << s.N << " C=" << s.C;
    EXPECT_TRUE(all_close(d_rstd.download(), ref_rstd, 0, 1e-4)) << "no delta, N=" << s.N << " C=" << s.C;
  }
}

// Both backward kernels (the warp-per-row one at the widths it takes), adding to a non-zero gradient and, with
// accumulate false, writing dweight over a poisoned buffer (the first write of a step).
TEST(KernelRmsnorm, BackwardAccumulatesLikeCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& [kernel, accumulate] : {std::make_pair(RmsnormBackwardKernel::block, true),
                                           std::make_pair(RmsnormBackwardKernel::block, false),
                                           std::make_pair(RmsnormBackwardKernel::warp, true),
                                           std::make_pair(RmsnormBackwardKernel::warp, false)})
  for (const auto& s : kShapes) {
    if (kernel == RmsnormBackwardKernel::warp && !rmsnorm_backward_warp_supported(s.C)) continue;
    const std::string what = cat(kernel == RmsnormBackwardKernel::warp ? "warp" : "block",
                                 accumulate ? " += " : " = ", "N=", s.N, " C=", s.C);
    const size_t n = (size_t)s.N * s.C;
    auto inp = round_bf16(random_normal(n, 1.0f, s.C));
    auto weight = round_bf16(random_uniform(s.C, 0.5f, 1.5f, s.C + 1));
    auto dout = round_bf16(random_normal(n, 1.0f, s.C + 2));
    // Gradients start non-zero and of the size of what is added, so a wrong increment shows.
    auto dinp = round_bf16(random_normal(n, 1.0f, s.C + 3));
    std::vector<float> dweight(s.C, 0.0f);  // fp32: a parameter gradient
    if (accumulate) dweight = random_normal(s.C, std::sqrt((float)s.N), s.C + 4);
    std::vector<float> out(n), rstd(s.N);
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), s.N, s.C, kEps);
    std::vector<float> ref_dinp = dinp, ref_dweight = dweight;
    rmsnorm_backward(ref_dinp.data(), ref_dweight.data(), dout.data(), inp.data(), weight.data(), rstd.data(), s.N,
                     s.C);

    auto d_inp = device_bf16(inp), d_weight = device_bf16(weight), d_dout = device_bf16(dout);
    auto d_dinp = device_bf16(dinp);
    DeviceArray<float> d_dweight(dweight), d_rstd(rstd), d_scratch(rmsnorm_backward_scratch_floats(s.C));
    if (!accumulate) d_dweight.poison();  // must be written, not read
    rmsnorm_backward(d_dinp->get(), d_dweight.get(), d_scratch.get(), d_dout->get(), d_inp->get(), d_weight->get(),
                     d_rstd.get(), s.N, s.C, 0, accumulate, kernel);
    EXPECT_TRUE(bf16_close(download_bf16(*d_dinp), ref_dinp, 1e-2)) << "dinp " << what;
    // dweight is fp32 from the same bf16 inputs: only the fp32 summation order differs from the CPU twin, so the
    // tolerance is far below one bf16 rounding (2^-9 ≈ 2e-3), which a bf16 output would fail.
    EXPECT_TRUE(bf16_close(d_dweight.download(), ref_dweight, 1e-4)) << "dweight " << what;
  }
}

TEST(KernelRmsnorm, WarpBackwardTakesUpTo2048Channels) {
  EXPECT_TRUE(rmsnorm_backward_warp_supported(2048));
  EXPECT_TRUE(rmsnorm_backward_warp_supported(8));
  EXPECT_FALSE(rmsnorm_backward_warp_supported(2056));
  EXPECT_FALSE(rmsnorm_backward_warp_supported(12));
  EXPECT_THROW(rmsnorm_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4096, 0, true,
                                RmsnormBackwardKernel::warp),
               Error);
}

TEST(KernelRmsnorm, RejectsUnsupportedHiddenSize) {
  EXPECT_THROW(rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 12, kEps, 0), Error);
  EXPECT_THROW(rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 40000, kEps, 0), Error);
}

}  // namespace
}  // namespace stapo::test
