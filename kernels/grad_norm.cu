// Global gradient norm: per-block partial sums of squares, then one block adds them in a fixed order.
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/grad_norm.h"

namespace stapo {

// ---- kernels ----

__global__ void grad_norm_partial_kernel(float* partials, const bf16* grads, size_t n, bool accumulate) {
  float sum = 0.0f;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t vecs = n / 8;
  for (size_t v = blockIdx.x * (size_t)blockDim.x + threadIdx.x; v < vecs; v += stride) {
    float g[8];
    load_bf16x8(g, grads + v * 8);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum += g[e] * g[e];
  }
  // The n % 8 tail, by the first threads of the grid.
  const size_t tail = vecs * 8 + blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (tail < n) {
    const float g = __bfloat162float(grads[tail]);
    sum += g * g;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = accumulate ? partials[blockIdx.x] + sum : sum;
}

__global__ void grad_norm_finish_kernel(float* norm, float* clip_scale, const float* partials, float max_norm) {
  float sum = 0.0f;
  for (int b = threadIdx.x; b < GRAD_NORM_BLOCKS; b += blockDim.x) sum += partials[b];
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    const float total = sqrtf(sum);
    *norm = total;
    *clip_scale = max_norm > 0.0f ? fminf(1.0f, max_norm / (total + 1e-6f)) : 1.0f;
  }
}

// ---- launchers ----

void grad_norm_accumulate(float* partials, const bf16* grads, size_t n, bool accumulate, cudaStream_t stream) {
  check_aligned16(grads, "grad_norm_accumulate", "grads");
  grad_norm_partial_kernel<<<GRAD_NORM_BLOCKS, 256, 0, stream>>>(partials, grads, n, accumulate);
  cudaCheck(cudaGetLastError());
}

void grad_norm_finish(float* norm, float* clip_scale, const float* partials, float max_norm, cudaStream_t stream) {
  grad_norm_finish_kernel<<<1, 256, 0, stream>>>(norm, clip_scale, partials, max_norm);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
