// RMSNorm fused with the residual add, the GPU twin of model/ops/rmsnorm.h.
// Forward, per row n of (N, C):
//   x = residual_in[n] + delta[n]        (stored, rounded to bf16, as residual_out[n]; without delta x = residual_in)
//   rstd[n] = 1 / sqrt(mean(x²) + eps),   out[n] = weight · x · rstd[n]
// Backward, with g = dout[n]·weight:
//   dinp[n]  += rstd·g − rstd³/C · x · Σ_c g_c x_c     (+=: dinp is the residual stream's gradient, which already
//                                                        holds the skip path — the backward half of the fusion)
//   dweight  += Σ_n dout[n] · x[n] · rstd[n]            (+=, parameter gradient; = with accumulate false, the first
//                                                        write of a step, which spares the caller a memset)
// Layouts: residual_in, delta, residual_out, out, dout, dinp (N, C) bf16; weight (C) bf16; dweight (C) fp32 (the
// parameter gradient, accumulated over micro-batches without bf16 rounding); rstd (N) fp32.
// One block per row, each thread keeps its 8-channel slices in registers (so C ≤ 16384 and C % 8 == 0). The
// backward has a second kernel, RmsnormBackwardKernel::warp: one warp per row, 4 rows per block in flight, for
// C ≤ 2048 (rmsnorm_backward_warp_supported), where the block kernel has only C/32 threads per row; the same math
// and the same scratch, a different fp32 summation order of dweight.
// dweight is deterministic: each block sums its rows in registers, writes one fp32 row of `scratch`, and a
// second kernel adds the rows in a fixed order.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace stapo {

void rmsnorm_forward(__nv_bfloat16* out, float* rstd, __nv_bfloat16* residual_out, const __nv_bfloat16* residual_in,
                     const __nv_bfloat16* delta, const __nv_bfloat16* weight, int N, int C, float eps,
                     cudaStream_t stream);

// Floats of fp32 scratch rmsnorm_backward needs for a hidden size C.
size_t rmsnorm_backward_scratch_floats(int C);

enum class RmsnormBackwardKernel { block, warp };
bool rmsnorm_backward_warp_supported(int C);

// N = 0 writes nothing, dweight included.
void rmsnorm_backward(__nv_bfloat16* dinp, float* dweight, float* scratch, const __nv_bfloat16* dout,
                      const __nv_bfloat16* inp, const __nv_bfloat16* weight, const float* rstd, int N, int C,
                      cudaStream_t stream, bool accumulate = true,
                      RmsnormBackwardKernel kernel = RmsnormBackwardKernel::block);

}  // namespace stapo
