// Matmuls through cuBLASLt: bf16 inputs, bf16 or fp32 output, fp32 accumulation.
// Row-major convention of the whole project:  D(m,n) = op(A) · op(B) + beta · D,
// op(A) = A (m,k) or, with trans_a, Aᵀ where A is stored (k,m); likewise op(B) (k,n) or Bᵀ of (n,k).
// A Linear layer y = x·Wᵀ with W stored (out,in) is matmul(y, x, W, rows, out, in, false, true).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace stapo {

struct MatmulPlanCache;  // kernels/matmul.cu: descriptors and the chosen algorithm per distinct call

struct MatmulContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // A training step repeats the same few dozen shapes; asking the heuristic once per shape saves tens of
  // microseconds per call. Not thread-safe: one context per thread.
  MatmulPlanCache* plans = nullptr;
  // > 0: a new shape times up to this many of the heuristic's algorithms on the call's own operands (into a
  // scratch output: the call's D is not touched) and keeps the fastest, printing one line per shape to stderr. The
  // first call of each shape then synchronizes the stream, and the choice (so the last bits of the results) may
  // differ between runs. 0: the heuristic's first algorithm.
  int autotune = 0;
};

constexpr int kMatmulAutotuneCandidates = 8;

constexpr size_t kMatmulWorkspaceBytes = 32u << 20;  // cuBLASLt's workspace (train/memory_plan.h counts it)
MatmulContext matmul_context_create(size_t workspace_bytes = kMatmulWorkspaceBytes);
void matmul_context_free(MatmulContext& ctx);

// beta = 0 overwrites D; beta = 1 accumulates into it (parameter gradients).
void matmul_bf16(const MatmulContext& ctx, __nv_bfloat16* d, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 int m, int n, int k, bool trans_a, bool trans_b, float beta, cudaStream_t stream);

// The same with an fp32 D: for outputs that must not be rounded to bf16 (the lm_head's logits, whose
// log-softmax would lose ~0.1 nats to bf16 rounding; gradients accumulated over several matmuls).
void matmul_bf16_f32(const MatmulContext& ctx, float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, int m,
                     int n, int k, bool trans_a, bool trans_b, float beta, cudaStream_t stream);

}  // namespace stapo
