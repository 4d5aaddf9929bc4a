// Row gather and scatter of bf16 matrices by a list of row indices. The CUDA model runs the lm_head on the
// response positions only: it gathers their final-norm rows, and scatters the lm_head's dh back.
//   rows_gather:   out[m] = in[index[m]]     out (M, C), in (N, C), index (M)   out =
//   rows_scatter:  out[index[m]] = in[m]     out (N, C), in (M, C), index (M)   out = on the listed rows only
// Indices must be distinct and in [0, N) (the caller builds them from the batch). C % 8 == 0 and 16-byte-
// aligned rows (128-bit copies, one thread per 8 channels).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stapo {

void rows_gather(__nv_bfloat16* out, const __nv_bfloat16* in, const int32_t* index, int M, int C,
                 cudaStream_t stream);
void rows_scatter(__nv_bfloat16* out, const __nv_bfloat16* in, const int32_t* index, int M, int C,
                  cudaStream_t stream);

}  // namespace stapo
