// kernels/attention_cudnn.h (cuDNN's fused SDPA, the comparison path) against model/ops/attention.h, on rows
// that each hold one sequence and then padding: causal, GQA and MQA, sliding windows, lengths and T that are
// not multiples of cuDNN's tiles. Built only where CMake found cuDNN and the cudnn-frontend headers.
#include <cmath>

#include "kernels/attention_cudnn.h"
#include "model/ops/attention.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

struct RowsCase {
  AttentionShape shape;        // rows, T, H, Hkv, D, window
  std::vector<int> lengths;    // one sequence per row, then padding
};

std::vector<int32_t> row_segments(const RowsCase& c) {
  std::vector<int32_t> seg((size_t)c.shape.rows * c.shape.T, -1);
  for (int r = 0; r < c.shape.rows; ++r)
    for (int p = 0; p < c.lengths[r]; ++p) seg[(size_t)r * c.shape.T + p] = 0;
  return seg;
}

// Host only: the lengths cuDNN's padding mask gets, and the clear refusal of packed rows.
TEST(CudnnAttentionRows, LengthsFromSegmentsAndPackedRowsRefused) {
  const std::vector<int32_t> ok = {0, 0, 0, -1, 0, 0, 0, 0, -1, -1, -1, -1};  // 3 rows of 4
  EXPECT_EQ(cudnn_attention_row_lengths(ok, 3, 4), (std::vector<int32_t>{3, 4, 0}));
  const std::vector<int32_t> packed = {0, 0, 1, 1, 0, -1, -1, -1};
  const std::string message = error_message([&] { cudnn_attention_row_lengths(packed, 2, 4); });
  EXPECT_NE(message.find("row 0 has segment 1 at position 2"), std::string::npos) << message;
  EXPECT_NE(message.find("without --pack,"), std::string::npos) << message;
  const std::vector<int32_t> gap = {0, -1, 0, -1};  // a sequence resuming after padding
  EXPECT_NE(error_message([&] { cudnn_attention_row_lengths(gap, 1, 4); }).find("position 2"), std::string::npos);
  EXPECT_NE(error_message([&] { cudnn_attention_row_lengths(ok, 2, 4); }).find("12 segments for 2 rows of 4"),
            std::string::npos);
}

// (rows, H, T) statistics → the CPU twin's (N, H) lse; padding positions left out (both sides −inf or unset).
std::vector<float> valid_lse(const std::vector<float>& stats, const RowsCase& c, bool cudnn_layout) {
  const AttentionShape& s = c.shape;
  std::vector<float> out;
  for (int r = 0; r < s.rows; ++r)
    for (int t = 0; t < c.lengths[r]; ++t)
      for (int h = 0; h < s.H; ++h)
        out.push_back(cudnn_layout ? stats[((size_t)r * s.H + h) * s.T + t] : stats[((size_t)r * s.T + t) * s.H + h]);
  return out;
}

TEST(KernelCudnnAttention, ForwardAndBackwardMatchCpu) {
  STAPO_REQUIRE_GPU();
  const std::vector<RowsCase> cases = {
      {{2, 2, 1, 1, 64, 0}, {1, 2}},                 // a one-token sequence (T = 1 itself: refused, below)
      {{2, 67, 4, 2, 64, 0}, {67, 40}},
      {{1, 130, 2, 1, 128, 37}, {130}},              // window not a tile multiple, MQA
      {{3, 100, 8, 2, 128, 0}, {13, 100, 77}},       // padding in two rows of three
      {{2, 257, 2, 1, 128, 100}, {257, 200}},        // window spanning several tiles
  };
  CudnnAttention cudnn;
  uint64_t salt = 100;
  for (const RowsCase& c : cases) {
    const AttentionShape& s = c.shape;
    const size_t N = (size_t)s.rows * s.T, nq = N * s.H * s.D, nkv = N * s.Hkv * s.D;
    auto q = round_bf16(random_normal(nq, 1.0f, ++salt));
    auto k = round_bf16(random_normal(nkv, 1.0f, ++salt));
    auto v = round_bf16(random_normal(nkv, 1.0f, ++salt));
    auto dout = round_bf16(random_normal(nq, 1.0f, ++salt));  // padding rows too: they must be ignored
    const auto segments = row_segments(c);
    const std::string where = cat("rows=", s.rows, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " D=", s.D,
                                  " window=", s.window);

    std::vector<float> ref_out(nq), ref_lse(N * s.H), ref_dq(nq), ref_dk(nkv), ref_dv(nkv);
    attention_forward(ref_out.data(), ref_lse.data(), q.data(), k.data(), v.data(), s, segments.data());
    attention_backward(ref_dq.data(), ref_dk.data(), ref_dv.data(), dout.data(), ref_out.data(), ref_lse.data(),
                       q.data(), k.data(), v.data(), s, segments.data());

    auto d_q = device_bf16(q), d_k = device_bf16(k), d_v = device_bf16(v), d_dout = device_bf16(dout);
    DeviceArray<bf16> d_out(nq), d_dq(nq), d_dk(nkv), d_dv(nkv);
    DeviceArray<float> d_lse(N * s.H);
    cudnn.set_rows(segments, s.rows, s.T, 0);
    cudnn.forward(d_out.get(), d_lse.get(), d_q->get(), d_k->get(), d_v->get(), s, 0);
    EXPECT_TRUE(bf16_close(download_bf16(d_out), ref_out, 1e-2)) << "out " << where;
    EXPECT_TRUE(all_close(valid_lse(d_lse.download(), c, true), valid_lse(ref_lse, c, false), 1e-4, 1e-4))
        << "lse " << where;

    // The backward takes cuDNN's own out and statistics, as the trainer does.
    cudnn.backward(d_dq.get(), d_dk.get(), d_dv.get(), d_dout->get(), d_out.get(), d_lse.get(), d_q->get(),
                   d_k->get(), d_v->get(), s, 0);
    // As in test_attention.cpp: a single-key query has exactly zero dq and dk, the GPU only rounding residue.
    const double cancel_scale = 1e-3 * rms(ref_dv);
    EXPECT_TRUE(bf16_close(download_bf16(d_dq), ref_dq, 2e-2, cancel_scale)) << "dq " << where;
    EXPECT_TRUE(bf16_close(download_bf16(d_dk), ref_dk, 2e-2, cancel_scale)) << "dk " << where;
    EXPECT_TRUE(bf16_close(download_bf16(d_dv), ref_dv, 2e-2)) << "dv " << where;
  }
}

// cuDNN's SDPA refuses s_q = s_kv = 1 (seen on an H200: its backward's validate; the forward ran): the refusal
// names the shape and our own kernels.
TEST(KernelCudnnAttention, SingleTokenRowsRefusedNamingTheFallback) {
  STAPO_REQUIRE_GPU();
  const AttentionShape s{1, 1, 1, 1, 64, 0};
  auto random_bf16 = [](uint64_t salt) { return device_bf16(round_bf16(random_normal(64, 1.0f, salt))); };
  auto q = random_bf16(7), k = random_bf16(8), v = random_bf16(9), dout = random_bf16(10);
  DeviceArray<bf16> out(64), dq(64), dk(64), dv(64);
  DeviceArray<float> lse(1);
  CudnnAttention cudnn;
  cudnn.set_rows(std::vector<int32_t>{0}, 1, 1, 0);
  const std::string message = error_message([&] {
    cudnn.forward(out.get(), lse.get(), q->get(), k->get(), v->get(), s, 0);
    cudnn.backward(dq.get(), dk.get(), dv.get(), dout->get(), out.get(), lse.get(), q->get(), k->get(), v->get(), s, 0);
  });
  EXPECT_NE(message.find("rows=1 T=1"), std::string::npos) << message;
  EXPECT_NE(message.find("--attention flash2"), std::string::npos) << message;
}

// One CudnnAttention serves every layer and batch: graphs are cached per shape, and set_rows must be called for
// the batch at hand (a stale row count is refused rather than read past).
TEST(KernelCudnnAttention, RowCountMustMatchSetRows) {
  STAPO_REQUIRE_GPU();
  const AttentionShape s{2, 64, 2, 1, 64, 0};
  const size_t nq = (size_t)s.rows * s.T * s.H * s.D, nkv = (size_t)s.rows * s.T * s.Hkv * s.D;
  DeviceArray<bf16> q(nq), k(nkv), v(nkv), out(nq);
  DeviceArray<float> lse((size_t)s.rows * s.T * s.H);
  CudnnAttention cudnn;
  cudnn.set_rows(std::vector<int32_t>(3 * 64, 0), 3, 64, 0);
  const std::string message =
      error_message([&] { cudnn.forward(out.get(), lse.get(), q.get(), k.get(), v.get(), s, 0); });
  EXPECT_NE(message.find("set_rows was given 3 rows, the call has 2"), std::string::npos) << message;
}

}  // namespace
}  // namespace stapo::test
