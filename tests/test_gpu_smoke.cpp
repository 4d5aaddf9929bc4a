// Smoke test of the CUDA toolchain: a real kernel (fp32 -> bf16) and a cuBLASLt bf16 matmul,
// both against CPU computations on random data.
#include <cuda_bf16.h>

#include <vector>

#include "kernels/convert.h"
#include "kernels/matmul.h"
#include "tests/gpu_test_util.h"
#include "tests/test_util.h"

namespace {

using bf16 = __nv_bfloat16;

std::vector<float> round_to_bf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
  return out;
}

std::vector<float> upload_and_convert(const std::vector<float>& host, bf16* device_out) {
  float* device_in = nullptr;
  cudaCheck(cudaMalloc(&device_in, host.size() * sizeof(float)));
  cudaCheck(cudaMemcpy(device_in, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  stapo::convert_fp32_to_bf16(device_out, device_in, host.size(), 0);
  cudaCheck(cudaFree(device_in));
  std::vector<bf16> back(host.size());
  cudaCheck(cudaMemcpy(back.data(), device_out, back.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(host.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = __bfloat162float(back[i]);
  return out;
}

TEST(GpuSmoke, ConvertMatchesHostRounding) {
  STAPO_REQUIRE_GPU();
  const size_t n = 100003;  // not a multiple of the block size
  auto host = stapo::test::random_uniform(n, -50.0f, 50.0f);
  bf16* device = nullptr;
  cudaCheck(cudaMalloc(&device, n * sizeof(bf16)));
  cudaCheck(cudaMemset(device, 0xff, n * sizeof(bf16)));  // poison: NaN bit pattern
  auto got = upload_and_convert(host, device);
  cudaCheck(cudaFree(device));
  EXPECT_TRUE(stapo::test::all_close(got, round_to_bf16(host), 0.0, 0.0));
}

// Row-major reference: D(m,n) = op(A)·op(B).
std::vector<float> matmul_reference(const std::vector<float>& a, const std::vector<float>& b, int m, int n, int k,
                                    bool trans_a, bool trans_b) {
  std::vector<float> d(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        float av = trans_a ? a[(size_t)p * m + i] : a[(size_t)i * k + p];
        float bv = trans_b ? b[(size_t)j * k + p] : b[(size_t)p * n + j];
        acc += static_cast<double>(av) * bv;
      }
      d[(size_t)i * n + j] = static_cast<float>(acc);
    }
  return d;
}

TEST(GpuSmoke, CublasLtBf16MatmulAllTransposes) {
  STAPO_REQUIRE_GPU();
  const int m = 67, n = 45, k = 96;
  auto ctx = stapo::matmul_context_create();
  for (int variant = 0; variant < 4; ++variant) {
    bool trans_a = variant & 1, trans_b = variant & 2;
    auto a = round_to_bf16(stapo::test::random_uniform((size_t)m * k, -1, 1, 2 * variant));
    auto b = round_to_bf16(stapo::test::random_uniform((size_t)k * n, -1, 1, 2 * variant + 1));
    bf16 *da, *db, *dd;
    cudaCheck(cudaMalloc(&da, a.size() * sizeof(bf16)));
    cudaCheck(cudaMalloc(&db, b.size() * sizeof(bf16)));
    cudaCheck(cudaMalloc(&dd, (size_t)m * n * sizeof(bf16)));
    upload_and_convert(a, da);
    upload_and_convert(b, db);
    cudaCheck(cudaMemset(dd, 0xff, (size_t)m * n * sizeof(bf16)));  // poison; beta = 0 must overwrite it
    stapo::matmul_bf16(ctx, dd, da, db, m, n, k, trans_a, trans_b, 0.0f, 0);
    std::vector<bf16> out((size_t)m * n);
    cudaCheck(cudaMemcpy(out.data(), dd, out.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> got(out.size());
    for (size_t i = 0; i < got.size(); ++i) got[i] = __bfloat162float(out[i]);
    // Output rounded to bf16: relative 2^-8 plus accumulation-order slack.
    EXPECT_TRUE(stapo::test::all_close(got, matmul_reference(a, b, m, n, k, trans_a, trans_b), 1e-2, 1e-2))
        << "trans_a=" << trans_a << " trans_b=" << trans_b;
    cudaCheck(cudaFree(da));
    cudaCheck(cudaFree(db));
    cudaCheck(cudaFree(dd));
  }
  stapo::matmul_context_free(ctx);
}

}  // namespace
