// kernels/embedding.cu against model/ops/embedding.h on random tokens (with repeats) and tables.
#include <cstring>
#include <random>

#include "kernels/embedding.h"
#include "model/ops/embedding.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

std::vector<int32_t> random_tokens(int N, int V, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::uniform_int_distribution<int32_t> dist(0, V - 1);
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = dist(rng);
  return tokens;
}

struct EmbeddingShape {
  int N, V, C;
};
// N > V forces repeated tokens; C = 8 and 264 are not multiples of the 128-thread block's 1024 channels.
const EmbeddingShape kShapes[] = {{1, 7, 8}, {37, 50, 200}, {515, 101, 264}, {1000, 4000, 1024}};

TEST(KernelEmbedding, ForwardMatchesCpuExactly) {
  STAPO_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    auto table = round_bf16(random_uniform((size_t)s.V * s.C, -1, 1, s.N));
    auto tokens = random_tokens(s.N, s.V, s.C);
    std::vector<float> ref((size_t)s.N * s.C);
    embedding_forward(ref.data(), tokens.data(), table.data(), s.N, s.C);
    auto d_table = device_bf16(table);
    DeviceArray<int32_t> d_tokens(tokens);
    DeviceArray<bf16> d_out((size_t)s.N * s.C);
    embedding_forward(d_out.get(), d_tokens.get(), d_table->get(), s.N, s.C, 0);
    EXPECT_TRUE(all_close(download_bf16(d_out), ref, 0, 0)) << "N=" << s.N << " V=" << s.V << " C=" << s.C;
  }
}

TEST(KernelEmbedding, BackwardAccumulatesLikeCpu) {
  STAPO_REQUIRE_GPU();
  for (const auto& s : kShapes) {
    // dtable starts non-zero: the backward must add to it (+=), and rows no token uses must stay as they were.
    // It is fp32 (parameter gradients accumulate over micro-batches unrounded), so the only difference from the
    // CPU twin is the fp32 summation order: 1e-5, far below one bf16 rounding (2^-9 ≈ 2e-3).
    auto dtable = random_uniform((size_t)s.V * s.C, -1, 1, 3 * s.N);
    auto dout = round_bf16(random_uniform((size_t)s.N * s.C, -1, 1, 3 * s.N + 1));
    auto tokens = random_tokens(s.N, s.V, s.C + 1);
    std::vector<float> ref = dtable;
    embedding_backward(ref.data(), dout.data(), tokens.data(), s.N, s.C);
    DeviceArray<float> d_dtable(dtable);
    auto d_dout = device_bf16(dout);
    auto index = embedding_grad_index_create(s.N);
    embedding_grad_index_build(index, tokens.data(), s.N, s.V, 0);
    embedding_backward(d_dtable.get(), d_dout->get(), index, s.C, 0);
    EXPECT_TRUE(bf16_close(d_dtable.download(), ref, 1e-5)) << "N=" << s.N << " V=" << s.V << " C=" << s.C;
    embedding_grad_index_free(index);
  }
}

// The index built on the device from the tokens there is the host build's, entry for entry (both group positions by
// token in increasing order), and the backward over it the same bit for bit; with a Llama 3 vocabulary (17 key
// bits) and N not a power of two.
TEST(KernelEmbedding, DeviceIndexEqualsHostIndex) {
  STAPO_REQUIRE_GPU();
  std::vector<EmbeddingShape> shapes(std::begin(kShapes), std::end(kShapes));
  shapes.push_back({4095, 128256, 64});
  for (const auto& s : shapes) {
    const std::string what = cat("N=", s.N, " V=", s.V, " C=", s.C);
    const auto tokens = random_tokens(s.N, s.V, s.C + 2);
    auto host = embedding_grad_index_create(s.N), device = embedding_grad_index_create(s.N, true);
    embedding_grad_index_build(host, tokens.data(), s.N, s.V, 0);
    DeviceArray<int32_t> d_tokens(tokens);
    embedding_grad_index_build_device(device, d_tokens.get(), s.N, s.V, 0);
    cudaCheck(cudaDeviceSynchronize());
    auto download = [](const int32_t* p, size_t n) {
      std::vector<int32_t> out(n);
      cudaCheck(cudaMemcpy(out.data(), p, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
      return out;
    };
    const int groups = download(device.device_groups, 1)[0];
    EXPECT_EQ(groups, host.groups) << what;
    EXPECT_EQ(download(device.order, s.N), download(host.order, s.N)) << "order " << what;
    EXPECT_EQ(download(device.group_start, host.groups + 1), download(host.group_start, host.groups + 1))
        << "group_start " << what;
    EXPECT_EQ(download(device.group_token, host.groups), download(host.group_token, host.groups))
        << "group_token " << what;

    const auto dtable = random_uniform((size_t)s.V * s.C, -1, 1, 5 * s.N);
    const auto dout = round_bf16(random_uniform((size_t)s.N * s.C, -1, 1, 5 * s.N + 1));
    DeviceArray<float> from_host(dtable), from_device(dtable);
    auto d_dout = device_bf16(dout);
    embedding_backward(from_host.get(), d_dout->get(), host, s.C, 0);
    embedding_backward(from_device.get(), d_dout->get(), device, s.C, 0);
    const std::vector<float> a = from_host.download(), b = from_device.download();
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "dtable " << what;
    embedding_grad_index_free(host);
    embedding_grad_index_free(device);
  }
}

TEST(KernelEmbedding, IndexRejectsTokenOutsideVocabulary) {
  // Host-side check, before any device call: runs without a GPU too.
  EmbeddingGradIndex index;
  index.capacity = 3;
  const int32_t tokens[3] = {1, 9, 2};
  try {
    embedding_grad_index_build(index, tokens, 3, 5, 0);
    FAIL() << "expected stapo::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace stapo::test
