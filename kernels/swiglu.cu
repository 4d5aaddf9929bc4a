// SwiGLU forward and backward (math in swiglu.h).
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/swiglu.h"

namespace stapo {

// ---- kernels ----

__device__ inline float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

// Vector v (8 elements) of the (N, F) output is at v·8; its gate and up at row·stride + column.
__device__ inline size_t strided_at(size_t v, int F, int stride) {
  const size_t per_row = (size_t)F / 8;
  return (v / per_row) * stride + (v % per_row) * 8;
}

__global__ void swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, size_t vecs, int F, int stride) {
  const size_t v = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (v >= vecs) return;
  const size_t at = strided_at(v, F, stride);
  float g[8], u[8];
  load_bf16x8(g, gate + at);
  load_bf16x8(u, up + at);
#pragma unroll
  for (int e = 0; e < 8; ++e) u[e] *= g[e] * sigmoidf(g[e]);
  store_bf16x8(out + v * 8, u);
}

__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                       size_t vecs, int F, int stride) {
  const size_t v = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (v >= vecs) return;
  const size_t at = strided_at(v, F, stride);
  float g[8], u[8], d[8];
  load_bf16x8(g, gate + at);
  load_bf16x8(u, up + at);
  load_bf16x8(d, dout + v * 8);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float s = sigmoidf(g[e]);
    const float dg = d[e] * u[e] * s * (1.0f + g[e] * (1.0f - s));
    u[e] = d[e] * g[e] * s;  // dup
    g[e] = dg;
  }
  store_bf16x8(dgate + at, g);
  store_bf16x8(dup + at, u);
}

// ---- launchers ----

static size_t swiglu_vecs(int N, int F, int stride, const char* op) {
  STAPO_CHECK(F > 0 && F % 8 == 0, op, ": F = ", F, " must be a positive multiple of 8");
  STAPO_CHECK(stride >= F && stride % 8 == 0, op, ": the gate/up row stride ", stride,
              " must be a multiple of 8 of at least F = ", F);
  STAPO_CHECK(N >= 0, op, ": N = ", N, " is negative");
  return (size_t)N * F / 8;
}

void swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int N, int F, int stride, cudaStream_t stream) {
  const size_t vecs = swiglu_vecs(N, F, stride, "swiglu_forward");
  check_aligned16(out, "swiglu_forward", "out");
  check_aligned16(gate, "swiglu_forward", "gate");
  check_aligned16(up, "swiglu_forward", "up");
  if (vecs == 0) return;
  const int block = 256;
  swiglu_forward_kernel<<<(unsigned)((vecs + block - 1) / block), block, 0, stream>>>(out, gate, up, vecs, F,
                                                                                      stride);
  cudaCheck(cudaGetLastError());
}

void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, int N, int F,
                     int stride, cudaStream_t stream) {
  const size_t vecs = swiglu_vecs(N, F, stride, "swiglu_backward");
  check_aligned16(dgate, "swiglu_backward", "dgate");
  check_aligned16(dup, "swiglu_backward", "dup");
  check_aligned16(dout, "swiglu_backward", "dout");
  check_aligned16(gate, "swiglu_backward", "gate");
  check_aligned16(up, "swiglu_backward", "up");
  if (vecs == 0) return;
  const int block = 256;
  swiglu_backward_kernel<<<(unsigned)((vecs + block - 1) / block), block, 0, stream>>>(dgate, dup, dout, gate, up,
                                                                                       vecs, F, stride);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
