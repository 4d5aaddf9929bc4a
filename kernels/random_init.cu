// Normal weights from a counter-based hash (see random_init.h).
#include <algorithm>

#include "kernels/cuda_common.h"
#include "kernels/random_init.h"

namespace stapo {

// ---- kernels ----

// One element per thread, grid-stride: the value depends on (seed, i) only.
__global__ void random_normal_kernel(float* out, size_t n, float mean, float stddev, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    if (stddev == 0.0f) {
      out[i] = mean;
      continue;
    }
    const uint64_t h = mix64(seed ^ mix64(i));
    const float u1 = ((uint32_t)(h >> 32) + 1.0f) * 2.3283064e-10f;  // (0, 1]: log(u1) is finite
    const float u2 = (uint32_t)h * 2.3283064e-10f;                    // [0, 1)
    out[i] = mean + stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

// ---- launchers ----

void random_normal_fill(float* out, size_t n, float mean, float stddev, uint64_t seed, cudaStream_t stream) {
  STAPO_CHECK(stddev >= 0.0f, "random_normal_fill: stddev = ", stddev, " must be >= 0");
  if (n == 0) return;
  const int blocks = (int)std::min<size_t>((n + 255) / 256, 65536);
  random_normal_kernel<<<blocks, 256, 0, stream>>>(out, n, mean, stddev, seed);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
