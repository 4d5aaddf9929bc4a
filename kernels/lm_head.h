// The lm_head fused with the per-token log-prob and entropy, chunked so that no (N, V) buffer exists;
// GPU twin of model/ops/lm_head.h. Tokens go in chunks of R rows, the vocabulary in chunks of Vc columns.
// Forward, per token chunk, per vocabulary chunk:
//   logits (R, Vc) fp32 = h_chunk · w_chunkᵀ          (cuBLASLt, bf16 in, fp32 out: logits are never rounded)
//   running max M, Σ e^(x−M) and Σ e^(x−M)·x, the target's logit (online over the vocabulary chunks)
// then lse = M + log Σ,  logp = x_target − lse,  entropy = lse − Σ p·x.  Tokens with targets < 0 get 0, 0.
// Backward (gradient of Σ dlogp·logp; entropy takes none), per token chunk, per vocabulary chunk, recomputing
// the logits: dlogits = dlogp·(onehot(target) − e^(x − lse)) in bf16, then
//   dh_chunk += dlogits · w_chunk    (fp32 accumulator over vocabulary chunks, written to dh (=) at the end)
//   dw_chunk += dlogitsᵀ · h_chunk   (+=, parameter gradient, fp32 output of the GEMM: no bf16 rounding per chunk
//                                    or micro-batch; with dw_beta = 0 the first token chunk writes (=) instead,
//                                    which spares the caller a memset of dw when N > 0)
// Layouts: h, dh (N, C) bf16; w (V, C) bf16; dw (V, C) fp32; targets (N) int32; logp, entropy, lse, dlogp (N) fp32.
// Memory: the workspace is O(R·Vc + R·C) (logits fp32 + dlogits bf16 + dh fp32), plus O(N) outputs: never
// N·V. Rows without a target still cost a matmul row; callers that care gather response rows first.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/matmul.h"

namespace stapo {

struct LmHeadWorkspace {
  int C = 0, chunk_rows = 0, chunk_vocab = 0;
  float* logits = nullptr;          // (chunk_rows, chunk_vocab)
  __nv_bfloat16* dlogits = nullptr; // (chunk_rows, chunk_vocab)
  float* dh = nullptr;              // (chunk_rows, C)
  float* running = nullptr;         // (4, chunk_rows): max, Σ e^(x−max), Σ e^(x−max)·x, target logit
};

LmHeadWorkspace lm_head_workspace_create(int C, int chunk_rows = 2048, int chunk_vocab = 16384);
// The bytes lm_head_workspace_create allocates (train/memory_plan.h counts them).
size_t lm_head_workspace_bytes(int C, int chunk_rows, int chunk_vocab);
void lm_head_workspace_free(LmHeadWorkspace& ws);

void lm_head_forward(const MatmulContext& ctx, LmHeadWorkspace& ws, float* logp, float* entropy, float* lse,
                     const __nv_bfloat16* h, const __nv_bfloat16* w, const int32_t* targets, int N, int C, int V,
                     cudaStream_t stream);

void lm_head_backward(const MatmulContext& ctx, LmHeadWorkspace& ws, __nv_bfloat16* dh, float* dw,
                      const float* dlogp, const float* lse, const __nv_bfloat16* h, const __nv_bfloat16* w,
                      const int32_t* targets, int N, int C, int V, cudaStream_t stream, float dw_beta = 1.0f);

}  // namespace stapo
