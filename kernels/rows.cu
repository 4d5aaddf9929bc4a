// Row gather and scatter (see rows.h).
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/rows.h"

namespace stapo {

// ---- kernels ----

// One thread per 8 channels of one listed row: copies row src_row(m) of `in` to row dst_row(m) of `out`.
template <bool SCATTER>
__global__ void rows_copy_kernel(bf16* out, const bf16* in, const int32_t* index, int M, int C) {
  const int vecs = C / 8;
  const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)M * vecs) return;
  const int m = (int)(i / vecs), c = (int)(i % vecs) * 8;
  const size_t dst = (size_t)(SCATTER ? index[m] : m) * C + c, src = (size_t)(SCATTER ? m : index[m]) * C + c;
  *reinterpret_cast<int4*>(out + dst) = *reinterpret_cast<const int4*>(in + src);
}

// ---- launchers ----

template <bool SCATTER>
static void rows_copy(bf16* out, const bf16* in, const int32_t* index, int M, int C, cudaStream_t stream,
                      const char* op) {
  STAPO_CHECK(C > 0 && C % 8 == 0, op, ": C = ", C, " must be a positive multiple of 8");
  STAPO_CHECK(M >= 0, op, ": M = ", M, " rows");
  check_aligned16(out, op, "out");
  check_aligned16(in, op, "in");
  if (M == 0) return;
  const size_t threads = (size_t)M * (C / 8);
  rows_copy_kernel<SCATTER><<<(unsigned)((threads + 255) / 256), 256, 0, stream>>>(out, in, index, M, C);
  cudaCheck(cudaGetLastError());
}

void rows_gather(bf16* out, const bf16* in, const int32_t* index, int M, int C, cudaStream_t stream) {
  rows_copy<false>(out, in, index, M, C, stream, "rows_gather");
}

void rows_scatter(bf16* out, const bf16* in, const int32_t* index, int M, int C, cudaStream_t stream) {
  rows_copy<true>(out, in, index, M, C, stream, "rows_scatter");
}

}  // namespace stapo
