// Chunked lm_head + log-prob + entropy, forward and backward (math, layouts and memory in lm_head.h).
#include <algorithm>

#include "kernels/convert.h"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/lm_head.h"

namespace stapo {

// ---- kernels ----

// Block per token row of the chunk: folds this vocabulary chunk [v0, v0 + vc) into the row's running stats.
__global__ void lm_head_chunk_stats_kernel(float* running, const float* logits, const int32_t* targets, int rows,
                                           int vc, int v0, bool first) {
  const int r = blockIdx.x;
  const float* x = logits + (size_t)r * vc;
  float local_max = -INFINITY;
  for (int c = threadIdx.x; c < vc; c += blockDim.x) local_max = fmaxf(local_max, x[c]);
  const float chunk_max = block_max(local_max);
  float sum = 0.0f, weighted = 0.0f;
  for (int c = threadIdx.x; c < vc; c += blockDim.x) {
    const float e = expf(x[c] - chunk_max);
    sum += e;
    weighted += e * x[c];
  }
  sum = block_sum(sum);
  weighted = block_sum(weighted);
  if (threadIdx.x != 0) return;
  float* row_max = running;
  float* row_sum = running + rows;
  float* row_weighted = running + 2 * rows;
  float* row_target = running + 3 * rows;
  const int t = targets[r];
  if (first) {
    row_max[r] = chunk_max;
    row_sum[r] = sum;
    row_weighted[r] = weighted;
    row_target[r] = 0.0f;
  } else {
    const float m = fmaxf(row_max[r], chunk_max);
    const float old_scale = expf(row_max[r] - m), new_scale = expf(chunk_max - m);
    row_sum[r] = row_sum[r] * old_scale + sum * new_scale;
    row_weighted[r] = row_weighted[r] * old_scale + weighted * new_scale;
    row_max[r] = m;
  }
  if (t >= v0 && t < v0 + vc) row_target[r] = x[t - v0];
}

// Thread per token row of the chunk.
__global__ void lm_head_finish_kernel(float* logp, float* entropy, float* lse, const float* running,
                                      const int32_t* targets, int rows) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float row_sum = running[rows + r];
  const float row_lse = running[r] + logf(row_sum);
  lse[r] = row_lse;
  const bool has_target = targets[r] >= 0;
  logp[r] = has_target ? running[3 * rows + r] - row_lse : 0.0f;
  entropy[r] = has_target ? row_lse - running[2 * rows + r] / row_sum : 0.0f;
}

// Block per token row: dlogits = g·(onehot(target) − e^(x − lse)), g = dlogp (0 without a target).
__global__ void lm_head_dlogits_kernel(bf16* dlogits, const float* logits, const float* lse, const float* dlogp,
                                       const int32_t* targets, int vc, int v0) {
  const int r = blockIdx.x;
  const int t = targets[r];
  const float g = t >= 0 ? dlogp[r] : 0.0f, row_lse = lse[r];
  const float* x = logits + (size_t)r * vc;
  bf16* d = dlogits + (size_t)r * vc;
  for (int c = threadIdx.x; c < vc; c += blockDim.x)
    d[c] = __float2bfloat16_rn(g * ((v0 + c == t ? 1.0f : 0.0f) - expf(x[c] - row_lse)));
}

// ---- launchers ----

LmHeadWorkspace lm_head_workspace_create(int C, int chunk_rows, int chunk_vocab) {
  STAPO_CHECK(C > 0 && C % 8 == 0, "lm_head_workspace_create: C = ", C, " must be a positive multiple of 8");
  STAPO_CHECK(chunk_rows > 0 && chunk_vocab > 0 && chunk_vocab % 8 == 0, "lm_head_workspace_create: chunk_rows = ",
              chunk_rows, " must be positive and chunk_vocab = ", chunk_vocab, " a positive multiple of 8");
  LmHeadWorkspace ws;
  ws.C = C;
  ws.chunk_rows = chunk_rows;
  ws.chunk_vocab = chunk_vocab;
  cudaCheck(cudaMalloc(&ws.logits, sizeof(float) * chunk_rows * chunk_vocab));
  cudaCheck(cudaMalloc(&ws.dlogits, sizeof(bf16) * chunk_rows * chunk_vocab));
  cudaCheck(cudaMalloc(&ws.dh, sizeof(float) * chunk_rows * C));
  cudaCheck(cudaMalloc(&ws.running, sizeof(float) * 4 * chunk_rows));
  return ws;
}

size_t lm_head_workspace_bytes(int C, int chunk_rows, int chunk_vocab) {  // the four allocations above
  const size_t rows = chunk_rows, vocab = chunk_vocab;
  return sizeof(float) * rows * vocab + sizeof(bf16) * rows * vocab + sizeof(float) * rows * C +
         sizeof(float) * 4 * rows;
}

void lm_head_workspace_free(LmHeadWorkspace& ws) {
  cudaCheck(cudaFree(ws.logits));
  cudaCheck(cudaFree(ws.dlogits));
  cudaCheck(cudaFree(ws.dh));
  cudaCheck(cudaFree(ws.running));
  ws = LmHeadWorkspace{};
}

static void lm_head_check(const LmHeadWorkspace& ws, int C, int V, const char* op) {
  STAPO_CHECK(ws.logits != nullptr, op, ": the workspace was not created (lm_head_workspace_create)");
  STAPO_CHECK(C == ws.C, op, ": hidden size C = ", C, " differs from the workspace's ", ws.C);
  STAPO_CHECK(V > 0 && V % 8 == 0, op, ": vocabulary size V = ", V,
              " must be a positive multiple of 8 (pad the lm_head rows)");
}

// logits (rows, vc) fp32 = h[n0 : n0+rows] · w[v0 : v0+vc]ᵀ, into the workspace.
static void chunk_logits(const MatmulContext& ctx, LmHeadWorkspace& ws, const bf16* h, const bf16* w, int n0,
                         int rows, int v0, int vc, int C, cudaStream_t stream) {
  matmul_bf16_f32(ctx, ws.logits, h + (size_t)n0 * C, w + (size_t)v0 * C, rows, vc, C, false, true, 0.0f, stream);
}

void lm_head_forward(const MatmulContext& ctx, LmHeadWorkspace& ws, float* logp, float* entropy, float* lse,
                     const bf16* h, const bf16* w, const int32_t* targets, int N, int C, int V, cudaStream_t stream) {
  lm_head_check(ws, C, V, "lm_head_forward");
  for (int n0 = 0; n0 < N; n0 += ws.chunk_rows) {
    const int rows = std::min(ws.chunk_rows, N - n0);
    for (int v0 = 0; v0 < V; v0 += ws.chunk_vocab) {
      const int vc = std::min(ws.chunk_vocab, V - v0);
      chunk_logits(ctx, ws, h, w, n0, rows, v0, vc, C, stream);
      lm_head_chunk_stats_kernel<<<rows, 256, 0, stream>>>(ws.running, ws.logits, targets + n0, rows, vc, v0,
                                                          v0 == 0);
      cudaCheck(cudaGetLastError());
    }
    lm_head_finish_kernel<<<ceil_div(rows, 256), 256, 0, stream>>>(logp + n0, entropy + n0, lse + n0, ws.running,
                                                                   targets + n0, rows);
    cudaCheck(cudaGetLastError());
  }
}

void lm_head_backward(const MatmulContext& ctx, LmHeadWorkspace& ws, bf16* dh, float* dw, const float* dlogp,
                      const float* lse, const bf16* h, const bf16* w, const int32_t* targets, int N, int C, int V,
                      cudaStream_t stream, float dw_beta) {
  lm_head_check(ws, C, V, "lm_head_backward");
  for (int n0 = 0; n0 < N; n0 += ws.chunk_rows) {
    const int rows = std::min(ws.chunk_rows, N - n0);
    for (int v0 = 0; v0 < V; v0 += ws.chunk_vocab) {
      const int vc = std::min(ws.chunk_vocab, V - v0);
      chunk_logits(ctx, ws, h, w, n0, rows, v0, vc, C, stream);
      lm_head_dlogits_kernel<<<rows, 256, 0, stream>>>(ws.dlogits, ws.logits, lse + n0, dlogp + n0, targets + n0, vc,
                                                      v0);
      cudaCheck(cudaGetLastError());
      matmul_bf16_f32(ctx, ws.dh, ws.dlogits, w + (size_t)v0 * C, rows, C, vc, false, false, v0 == 0 ? 0.0f : 1.0f,
                      stream);
      matmul_bf16_f32(ctx, dw + (size_t)v0 * C, ws.dlogits, h + (size_t)n0 * C, vc, C, rows, true, false,
                      n0 == 0 ? dw_beta : 1.0f, stream);
    }
    convert_fp32_to_bf16(dh + (size_t)n0 * C, ws.dh, (size_t)rows * C, stream);
  }
}

}  // namespace stapo
