// cuBLASLt wrapper. cuBLASLt is column-major; a row-major (r,c) matrix is its column-major transpose,
// so D = op(A)·op(B) in row-major is Dᵀ = op(B)ᵀ·op(A)ᵀ in column-major: we pass B first.
// The descriptors and the heuristic's algorithm (or, with ctx.autotune, the fastest of its first candidates, timed
// once) are built once per distinct (shape, transposes, output type, pointer alignments, beta = 0 or not) and cached
// in the context.
#include "kernels/cuda_common.h"
#include "kernels/matmul.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <map>
#include <vector>

namespace stapo {

struct MatmulPlan {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t first, second, out;  // column-major B, A, D
  cublasLtMatmulAlgo_t algo;
};

struct MatmulPlanCache {
  std::map<std::array<int64_t, 10>, MatmulPlan> plans;
};

// The operands of the call that creates a plan, for the autotuner's timing runs.
struct MatmulOperands {
  const __nv_bfloat16 *a, *b;
  cudaStream_t stream;
};

MatmulContext matmul_context_create(size_t workspace_bytes) {
  MatmulContext ctx;
  cublasCheck(cublasLtCreate(&ctx.handle));
  ctx.workspace_bytes = workspace_bytes;
  cudaCheck(cudaMalloc(&ctx.workspace, workspace_bytes));
  ctx.plans = new MatmulPlanCache;
  return ctx;
}

void matmul_context_free(MatmulContext& ctx) {
  if (ctx.plans) {
    for (auto& [key, plan] : ctx.plans->plans) {
      cublasCheck(cublasLtMatrixLayoutDestroy(plan.out));
      cublasCheck(cublasLtMatrixLayoutDestroy(plan.second));
      cublasCheck(cublasLtMatrixLayoutDestroy(plan.first));
      cublasCheck(cublasLtMatmulDescDestroy(plan.desc));
    }
    delete ctx.plans;
  }
  if (ctx.workspace) cudaCheck(cudaFree(ctx.workspace));
  if (ctx.handle) cublasCheck(cublasLtDestroy(ctx.handle));
  ctx = MatmulContext{};
}

// Largest power of two (≤ 256) dividing the address: cuBLASLt's heuristic otherwise assumes 256-byte
// alignment and may pick an algorithm that faults on a pointer offset into a larger tensor.
static uint32_t pointer_alignment(const void* p) {
  uint32_t align = 256;
  while (align > 1 && reinterpret_cast<uintptr_t>(p) % align != 0) align /= 2;
  return align;
}

// The fastest of the heuristic's candidates on the operands of the call that creates the plan, into a scratch
// output of D's size (zeroed, read as C when accumulating; the call's D is not touched). Each
// candidate runs once to warm up, then the best of 3 timed runs counts; a candidate cuBLASLt refuses to run is
// skipped. Falls back to the heuristic's first when the scratch cannot be allocated.
static cublasLtMatmulAlgo_t matmul_autotune(const MatmulContext& ctx, const MatmulPlan& plan,
                                            const std::vector<cublasLtMatmulHeuristicResult_t>& candidates,
                                            const MatmulOperands& op, cudaDataType_t d_type, int m, int n, int k,
                                            bool accumulate) {
  void* scratch = nullptr;
  const size_t bytes = (size_t)m * n * (d_type == CUDA_R_32F ? 4 : 2);
  if (cudaMalloc(&scratch, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    fprintf(stderr, "matmul autotune m=%d n=%d k=%d: no room for a %zu-byte scratch output, the heuristic's first\n",
            m, n, k, bytes);
    return candidates[0].algo;
  }
  cudaEvent_t start, stop;
  cudaCheck(cudaEventCreate(&start));
  cudaCheck(cudaEventCreate(&stop));
  cudaCheck(cudaMemsetAsync(scratch, 0, bytes, op.stream));
  cudaCheck(cudaStreamSynchronize(op.stream));  // the timings below measure only themselves
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  std::vector<float> best_ms(candidates.size(), -1.0f);
  for (size_t c = 0; c < candidates.size(); ++c) {
    auto run = [&] {
      return cublasLtMatmul(ctx.handle, plan.desc, &alpha, op.b, plan.first, op.a, plan.second, &beta, scratch,
                            plan.out, scratch, plan.out, &candidates[c].algo, ctx.workspace, ctx.workspace_bytes,
                            op.stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;
    for (int rep = 0; rep < 3; ++rep) {
      cudaCheck(cudaEventRecord(start, op.stream));
      cublasCheck(run());
      cudaCheck(cudaEventRecord(stop, op.stream));
      cudaCheck(cudaEventSynchronize(stop));
      float ms = 0;
      cudaCheck(cudaEventElapsedTime(&ms, start, stop));
      if (best_ms[c] < 0 || ms < best_ms[c]) best_ms[c] = ms;
    }
  }
  cudaCheck(cudaEventDestroy(start));
  cudaCheck(cudaEventDestroy(stop));
  cudaCheck(cudaFree(scratch));
  size_t chosen = 0;
  for (size_t c = 0; c < candidates.size(); ++c)
    if (best_ms[c] >= 0 && (best_ms[chosen] < 0 || best_ms[c] < best_ms[chosen])) chosen = c;
  fprintf(stderr, "matmul autotune m=%d n=%d k=%d %s out%s: %zu candidates, heuristic's first %.4f ms, chosen #%zu "
          "%.4f ms\n", m, n, k, d_type == CUDA_R_32F ? "fp32" : "bf16", accumulate ? " +=" : "", candidates.size(),
          best_ms[0], chosen + 1, best_ms[chosen]);
  return candidates[chosen].algo;
}

static MatmulPlan matmul_plan_create(const MatmulContext& ctx, const MatmulOperands& op, cudaDataType_t d_type, int m,
                                     int n, int k, bool trans_a, bool trans_b, bool accumulate, uint32_t align_first,
                                     uint32_t align_second, uint32_t align_out) {
  MatmulPlan plan;
  // Column-major view: first operand is B (stored n×k when trans_b, else k×n row-major).
  cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasCheck(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasCheck(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  cublasCheck(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  // Stored column-major shapes (rows, cols, leading dimension).
  if (trans_b)
    cublasCheck(cublasLtMatrixLayoutCreate(&plan.first, CUDA_R_16BF, k, n, k));
  else
    cublasCheck(cublasLtMatrixLayoutCreate(&plan.first, CUDA_R_16BF, n, k, n));
  if (trans_a)
    cublasCheck(cublasLtMatrixLayoutCreate(&plan.second, CUDA_R_16BF, m, k, m));
  else
    cublasCheck(cublasLtMatrixLayoutCreate(&plan.second, CUDA_R_16BF, k, m, k));
  cublasCheck(cublasLtMatrixLayoutCreate(&plan.out, d_type, n, m, n));

  cublasLtMatmulPreference_t pref;
  cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &ctx.workspace_bytes, sizeof(ctx.workspace_bytes)));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_first,
                                                   sizeof(align_first)));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_second,
                                                   sizeof(align_second)));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_out,
                                                   sizeof(align_out)));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_out,
                                                   sizeof(align_out)));
  std::vector<cublasLtMatmulHeuristicResult_t> heuristics(std::max(1, ctx.autotune));
  int found = 0;
  cublasCheck(cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan.desc, plan.first, plan.second, plan.out, plan.out, pref,
                                             (int)heuristics.size(), heuristics.data(), &found));
  cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
  STAPO_CHECK(found > 0, "cuBLASLt has no bf16 algorithm for m=", m, " n=", n, " k=", k, " (trans_a=", trans_a,
              ", trans_b=", trans_b, ", ", d_type == CUDA_R_32F ? "fp32" : "bf16", " output, accumulate=", accumulate,
              ")");
  plan.algo = heuristics[0].algo;
  heuristics.resize(found);
  if (found > 1) plan.algo = matmul_autotune(ctx, plan, heuristics, op, d_type, m, n, k, accumulate);
  return plan;
}

static void matmul_impl(const MatmulContext& ctx, void* d, cudaDataType_t d_type, const __nv_bfloat16* a,
                        const __nv_bfloat16* b, int m, int n, int k, bool trans_a, bool trans_b, float beta,
                        cudaStream_t stream) {
  STAPO_CHECK(m > 0 && n > 0 && k > 0, "matmul: bad shape m=", m, " n=", n, " k=", k);
  STAPO_CHECK(ctx.plans != nullptr, "matmul: the context was not created (matmul_context_create)");
  const uint32_t align_first = pointer_alignment(b), align_second = pointer_alignment(a),
                 align_out = pointer_alignment(d);
  const std::array<int64_t, 10> key = {m, n, k, trans_a, trans_b, d_type, beta != 0.0f, align_first, align_second,
                                       align_out};
  auto it = ctx.plans->plans.find(key);
  if (it == ctx.plans->plans.end())
    it = ctx.plans->plans
             .emplace(key, matmul_plan_create(ctx, MatmulOperands{a, b, stream}, d_type, m, n, k, trans_a, trans_b,
                                              beta != 0.0f, align_first, align_second, align_out))
             .first;
  const MatmulPlan& plan = it->second;
  const float alpha = 1.0f;
  cublasCheck(cublasLtMatmul(ctx.handle, plan.desc, &alpha, b, plan.first, a, plan.second, &beta, d, plan.out, d,
                             plan.out, &plan.algo, ctx.workspace, ctx.workspace_bytes, stream));
}

void matmul_bf16(const MatmulContext& ctx, __nv_bfloat16* d, const __nv_bfloat16* a, const __nv_bfloat16* b,
                 int m, int n, int k, bool trans_a, bool trans_b, float beta, cudaStream_t stream) {
  matmul_impl(ctx, d, CUDA_R_16BF, a, b, m, n, k, trans_a, trans_b, beta, stream);
}

void matmul_bf16_f32(const MatmulContext& ctx, float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, int m,
                     int n, int k, bool trans_a, bool trans_b, float beta, cudaStream_t stream) {
  matmul_impl(ctx, d, CUDA_R_32F, a, b, m, n, k, trans_a, trans_b, beta, stream);
}

}  // namespace stapo
