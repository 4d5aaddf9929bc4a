// kernels/matmul.cu (bf16 and fp32 outputs, beta = 0 and 1, pointers offset into larger tensors) against
// model/ops/matmul.h.
#include "kernels/matmul.h"
#include "model/ops/matmul.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct MatmulShape {
  int m, n, k;
};
const MatmulShape kShapes[] = {{1, 8, 8}, {67, 45, 96}, {200, 264, 1000}};

// With the heuristic's first algorithm, and with each shape's fastest of several timed (autotune: the timing runs
// write a scratch output, so D, accumulated into once, shows any stray write).
TEST(KernelMatmul, AllTransposesBothOutputsAndAccumulate) {
  STAPO_REQUIRE_GPU();
  for (int autotune : {0, kMatmulAutotuneCandidates}) {
    auto ctx = matmul_context_create();
    ctx.autotune = autotune;
    for (const auto& s : kShapes)
      for (int variant = 0; variant < 8; ++variant) {
        const bool trans_a = variant & 1, trans_b = variant & 2, accumulate = variant & 4;
        const float beta = accumulate ? 1.0f : 0.0f;
        // Operands start 8 elements (16 bytes) into their buffers, as a chunk of a weight matrix would.
        const size_t offset = 8;
        auto a = round_bf16(random_uniform(offset + (size_t)s.m * s.k, -1, 1, 3 * variant));
        auto b = round_bf16(random_uniform(offset + (size_t)s.k * s.n, -1, 1, 3 * variant + 1));
        auto d0 = round_bf16(random_uniform((size_t)s.m * s.n, -4, 4, 3 * variant + 2));
        std::vector<float> ref = d0;
        matmul_cpu(ref.data(), a.data() + offset, b.data() + offset, s.m, s.n, s.k, trans_a, trans_b, beta);
        auto d_a = device_bf16(a), d_b = device_bf16(b);
        std::string what = cat("m=", s.m, " n=", s.n, " k=", s.k, " trans_a=", trans_a, " trans_b=", trans_b,
                               " beta=", beta, " autotune=", autotune);

        auto d_out = device_bf16(d0);
        if (!accumulate) d_out->poison();
        matmul_bf16(ctx, d_out->get(), d_a->get() + offset, d_b->get() + offset, s.m, s.n, s.k, trans_a, trans_b, beta,
                    0);
        EXPECT_TRUE(bf16_close(download_bf16(*d_out), ref, 1e-2)) << "bf16 out, " << what;

        DeviceArray<float> d_out32(d0);
        if (!accumulate) d_out32.poison();
        matmul_bf16_f32(ctx, d_out32.get(), d_a->get() + offset, d_b->get() + offset, s.m, s.n, s.k, trans_a, trans_b,
                        beta, 0);
        // fp32 output: only the summation order differs from the CPU.
        EXPECT_TRUE(all_close(d_out32.download(), ref, 1e-5 * s.k, 1e-4)) << "fp32 out, " << what;
      }
    matmul_context_free(ctx);
  }
}

}  // namespace
}  // namespace stapo::test
