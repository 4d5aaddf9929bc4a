// RoPE forward and backward: one kernel, the backward rotates by the opposite angle (math in rope.h).
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/rope.h"

namespace stapo {

// ---- kernel ----

// direction = +1 forward, −1 backward. Thread → (token n, head h, 8 pairs starting at i0).
__global__ void rope_rotate_kernel(bf16* out, size_t out_stride, const bf16* in, size_t in_stride,
                                   const int32_t* positions, const float* inv_freq, int N, int nh, int D,
                                   float direction) {
  const int slices = D / 16;  // groups of 8 pairs per head
  const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * nh * slices) return;
  const size_t head = idx / slices;  // n·nh + h
  const int i0 = (int)(idx % slices) * 8;
  const int n = (int)(head / nh), h = (int)(head % nh);
  const bf16* in_first = in + n * in_stride + (size_t)h * D + i0;
  bf16* first = out + n * out_stride + (size_t)h * D + i0;
  bf16* second = first + D / 2;
  float a[8], b[8];
  load_bf16x8(a, in_first);
  load_bf16x8(b, in_first + D / 2);
  const float pos = (float)positions[n];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    float sin_a, cos_a;
    sincosf(pos * inv_freq[i0 + e], &sin_a, &cos_a);  // full-range sincosf: angles reach thousands of radians
    sin_a *= direction;
    const float new_a = a[e] * cos_a - b[e] * sin_a;
    b[e] = b[e] * cos_a + a[e] * sin_a;
    a[e] = new_a;
  }
  store_bf16x8(first, a);
  store_bf16x8(second, b);
}

// ---- launchers ----

static void rope_launch(bf16* out, size_t out_stride, const bf16* in, size_t in_stride, const int32_t* positions,
                        const float* inv_freq, int N, int nh, int D, float direction, const char* op,
                        cudaStream_t stream) {
  STAPO_CHECK(D > 0 && D % 16 == 0, op, ": head dim D = ", D, " must be a positive multiple of 16");
  STAPO_CHECK(nh > 0, op, ": number of heads ", nh, " must be positive");
  // 16-byte loads and stores at every token's start.
  STAPO_CHECK(out_stride >= (size_t)nh * D && in_stride >= (size_t)nh * D && out_stride % 8 == 0 &&
                  in_stride % 8 == 0,
              op, ": row strides ", out_stride, " (out) and ", in_stride, " (in) must be multiples of 8 of at least nh·D = ",
              nh * D);
  check_aligned16(out, op, "out");
  check_aligned16(in, op, "in");
  if (N == 0) return;
  const int block = 256;
  const size_t threads = (size_t)N * nh * (D / 16);
  rope_rotate_kernel<<<(unsigned)((threads + block - 1) / block), block, 0, stream>>>(
      out, out_stride, in, in_stride, positions, inv_freq, N, nh, D, direction);
  cudaCheck(cudaGetLastError());
}

void rope_forward(bf16* x, const int32_t* positions, const float* inv_freq, int N, int nh, int D,
                  cudaStream_t stream) {
  const size_t row = (size_t)nh * D;
  rope_launch(x, row, x, row, positions, inv_freq, N, nh, D, 1.0f, "rope_forward", stream);
}

void rope_backward(bf16* dx, const int32_t* positions, const float* inv_freq, int N, int nh, int D,
                   cudaStream_t stream) {
  const size_t row = (size_t)nh * D;
  rope_launch(dx, row, dx, row, positions, inv_freq, N, nh, D, -1.0f, "rope_backward", stream);
}

void rope_forward_rows(bf16* out, size_t out_stride, const bf16* in, size_t in_stride, const int32_t* positions,
                       const float* inv_freq, int N, int nh, int D, cudaStream_t stream) {
  rope_launch(out, out_stride, in, in_stride, positions, inv_freq, N, nh, D, 1.0f, "rope_forward_rows", stream);
}

void rope_backward_rows(bf16* out, size_t out_stride, const bf16* in, size_t in_stride, const int32_t* positions,
                        const float* inv_freq, int N, int nh, int D, cudaStream_t stream) {
  rope_launch(out, out_stride, in, in_stride, positions, inv_freq, N, nh, D, -1.0f, "rope_backward_rows", stream);
}

}  // namespace stapo
