// kernels/lm_head.cu against model/ops/lm_head.h, with chunk sizes that split both tokens and vocabulary
// unevenly, and tokens without a target.
#include <random>

#include "kernels/lm_head.h"
#include "model/ops/lm_head.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct LmHeadCase {
  int N, C, V, chunk_rows, chunk_vocab;
};
// One chunk; 37 rows in chunks of 8 (4 full + 5) and 1336 = 5·256 + 56 vocabulary; a larger uneven split.
const LmHeadCase kCases[] = {{5, 64, 1000, 2048, 16384}, {37, 96, 1336, 8, 256}, {200, 256, 4104, 64, 1024}};

std::vector<int32_t> random_targets(int N, int V, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::uniform_int_distribution<int32_t> dist(0, V - 1), no_target(0, 4);
  std::vector<int32_t> t(N);
  for (auto& x : t) x = no_target(rng) == 0 ? -1 : dist(rng);
  t[N - 1] = V - 1;  // the last vocabulary column, in the last (partial) chunk
  return t;
}

TEST(KernelLmHead, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  auto ctx = matmul_context_create();
  for (const auto& c : kCases) {
    const std::string what = cat("N=", c.N, " C=", c.C, " V=", c.V, " chunks ", c.chunk_rows, "x", c.chunk_vocab);
    // Logits of a few units, like a trained model's: h ~ 1, w ~ 1/sqrt(C)·3.
    auto h = round_bf16(random_normal((size_t)c.N * c.C, 1.0f, c.V));
    auto w = round_bf16(random_normal((size_t)c.V * c.C, 3.0f / std::sqrt((float)c.C), c.V + 1));
    auto targets = random_targets(c.N, c.V, c.V + 2);
    auto dlogp = random_normal(c.N, 1.0f, c.V + 3);
    auto dw0 = random_normal((size_t)c.V * c.C, 0.1f, c.V + 4);  // fp32: a parameter gradient

    std::vector<float> ref_logp(c.N), ref_entropy(c.N), ref_dh((size_t)c.N * c.C), ref_dw = dw0;
    lm_head_forward(ref_logp.data(), ref_entropy.data(), h.data(), w.data(), targets.data(), c.N, c.C, c.V);
    lm_head_backward(ref_dh.data(), ref_dw.data(), dlogp.data(), h.data(), w.data(), targets.data(), c.N, c.C, c.V);

    auto ws = lm_head_workspace_create(c.C, c.chunk_rows, c.chunk_vocab);
    auto d_h = device_bf16(h), d_w = device_bf16(w);
    DeviceArray<float> d_dw(dw0);
    DeviceArray<int32_t> d_targets(targets);
    DeviceArray<float> d_logp(c.N), d_entropy(c.N), d_lse(c.N), d_dlogp(dlogp);
    DeviceArray<bf16> d_dh((size_t)c.N * c.C);
    lm_head_forward(ctx, ws, d_logp.get(), d_entropy.get(), d_lse.get(), d_h->get(), d_w->get(), d_targets.get(), c.N,
                    c.C, c.V, 0);
    // fp32 logits from the same bf16 inputs: only summation order differs.
    EXPECT_TRUE(all_close(d_logp.download(), ref_logp, 1e-3, 1e-3)) << "logp " << what;
    EXPECT_TRUE(all_close(d_entropy.download(), ref_entropy, 1e-3, 1e-3)) << "entropy " << what;

    lm_head_backward(ctx, ws, d_dh.get(), d_dw.get(), d_dlogp.get(), d_lse.get(), d_h->get(), d_w->get(),
                     d_targets.get(), c.N, c.C, c.V, 0);
    EXPECT_TRUE(bf16_close(download_bf16(d_dh), ref_dh, 1e-2)) << "dh " << what;
    // dw is fp32, but from bf16 dlogits: one bf16 rounding per product term, as dh.
    EXPECT_TRUE(bf16_close(d_dw.download(), ref_dw, 1e-2)) << "dw " << what;
    lm_head_workspace_free(ws);
  }
  matmul_context_free(ctx);
}

// Structured: w = 0 gives logits 0, so every token has logp = −log V and entropy = log V exactly.
TEST(KernelLmHead, ZeroWeightsGiveUniformDistribution) {
  STAPO_REQUIRE_GPU();
  const int N = 19, C = 32, V = 1000;
  auto ctx = matmul_context_create();
  auto ws = lm_head_workspace_create(C, 8, 256);
  auto d_h = device_bf16(random_normal((size_t)N * C, 1.0f, 1));
  auto d_w = device_bf16(std::vector<float>((size_t)V * C, 0.0f));
  auto targets = random_targets(N, V, 2);
  DeviceArray<int32_t> d_targets(targets);
  DeviceArray<float> d_logp(N), d_entropy(N), d_lse(N);
  lm_head_forward(ctx, ws, d_logp.get(), d_entropy.get(), d_lse.get(), d_h->get(), d_w->get(), d_targets.get(), N, C,
                  V, 0);
  std::vector<float> want_logp(N), want_entropy(N);
  for (int i = 0; i < N; ++i) {
    want_logp[i] = targets[i] >= 0 ? -std::log((float)V) : 0.0f;
    want_entropy[i] = targets[i] >= 0 ? std::log((float)V) : 0.0f;
  }
  EXPECT_TRUE(all_close(d_logp.download(), want_logp, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(d_entropy.download(), want_entropy, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(d_lse.download(), std::vector<float>(N, std::log((float)V)), 1e-5, 1e-6));
  lm_head_workspace_free(ws);
  matmul_context_free(ctx);
}

}  // namespace
}  // namespace stapo::test
