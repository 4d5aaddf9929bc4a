// RMSNorm forward/backward fused with the residual add (math in rmsnorm.h).
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/rmsnorm.h"

namespace stapo {

// Each thread owns up to this many 8-channel slices of a row, and a block has at most RMSNORM_MAX_THREADS
// threads (the backward needs ~128 registers per thread: 512 of them fill the 64K register file), so
// C ≤ 8·4·512 = 16384 (Llama 3 405B's width).
constexpr int RMSNORM_SLICES = 4;
constexpr int RMSNORM_MAX_THREADS = 512;
// Blocks of the backward; each writes one fp32 row of partial dweight into the scratch.
constexpr int RMSNORM_BACKWARD_BLOCKS = 264;

// ---- kernels ----

__global__ void __launch_bounds__(RMSNORM_MAX_THREADS)
    rmsnorm_forward_kernel(bf16* out, float* rstd, bf16* residual_out, const bf16* residual_in,
                                       const bf16* delta, const bf16* weight, int C, float eps) {
  const size_t row = (size_t)blockIdx.x * C;
  float x[RMSNORM_SLICES][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int s = 0; s < RMSNORM_SLICES; ++s) {
    const int c = (threadIdx.x + s * blockDim.x) * 8;
    if (c >= C) continue;
    load_bf16x8(x[s], residual_in + row + c);
    if (delta) {
      float d[8];
      load_bf16x8(d, delta + row + c);
#pragma unroll
      for (int e = 0; e < 8; ++e) x[s][e] = __bfloat162float(__float2bfloat16_rn(x[s][e] + d[e]));
      store_bf16x8(residual_out + row + c, x[s]);  // exact: the values are already bf16
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += x[s][e] * x[s][e];
  }
  const float r = rsqrtf(block_sum(sum_sq) / C + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
#pragma unroll
  for (int s = 0; s < RMSNORM_SLICES; ++s) {
    const int c = (threadIdx.x + s * blockDim.x) * 8;
    if (c >= C) continue;
    float w[8];
    load_bf16x8(w, weight + c);
#pragma unroll
    for (int e = 0; e < 8; ++e) w[e] *= x[s][e] * r;
    store_bf16x8(out + row + c, w);
  }
}

// Block b handles rows b, b + gridDim.x, ...; its partial dweight goes to scratch row b.
__global__ void __launch_bounds__(RMSNORM_MAX_THREADS)
    rmsnorm_backward_kernel(bf16* dinp, float* scratch, const bf16* dout, const bf16* inp,
                                        const bf16* weight, const float* rstd, int N, int C) {
  float dweight_acc[RMSNORM_SLICES][8] = {};
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    const size_t row = (size_t)n * C;
    const float r = rstd[n];
    float x[RMSNORM_SLICES][8], g[RMSNORM_SLICES][8];
    float g_dot_x = 0.0f;
#pragma unroll
    for (int s = 0; s < RMSNORM_SLICES; ++s) {
      const int c = (threadIdx.x + s * blockDim.x) * 8;
      if (c >= C) continue;
      float w[8];
      load_bf16x8(x[s], inp + row + c);
      load_bf16x8(g[s], dout + row + c);
      load_bf16x8(w, weight + c);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        dweight_acc[s][e] += g[s][e] * x[s][e] * r;
        g[s][e] *= w[e];
        g_dot_x += g[s][e] * x[s][e];
      }
    }
    const float coeff = block_sum(g_dot_x) * r * r * r / C;
#pragma unroll
    for (int s = 0; s < RMSNORM_SLICES; ++s) {
      const int c = (threadIdx.x + s * blockDim.x) * 8;
      if (c >= C) continue;
      float d[8];
      load_bf16x8(d, dinp + row + c);
#pragma unroll
      for (int e = 0; e < 8; ++e) d[e] += r * g[s][e] - coeff * x[s][e];
      store_bf16x8(dinp + row + c, d);
    }
  }
  float* partial = scratch + (size_t)blockIdx.x * C;
#pragma unroll
  for (int s = 0; s < RMSNORM_SLICES; ++s) {
    const int c = (threadIdx.x + s * blockDim.x) * 8;
    if (c >= C) continue;
    reinterpret_cast<float4*>(partial + c)[0] = make_float4(dweight_acc[s][0], dweight_acc[s][1], dweight_acc[s][2],
                                                            dweight_acc[s][3]);
    reinterpret_cast<float4*>(partial + c)[1] = make_float4(dweight_acc[s][4], dweight_acc[s][5], dweight_acc[s][6],
                                                            dweight_acc[s][7]);
  }
}

// One thread per channel: dweight[c] += Σ_b scratch[b][c], b in increasing order.
__global__ void rmsnorm_dweight_kernel(float* dweight, const float* scratch, int blocks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float partials = 0.0f;
  for (int b = 0; b < blocks; ++b) partials += scratch[(size_t)b * C + c];
  dweight[c] += partials;
}

// ---- launchers ----

static int rmsnorm_threads(int C, const char* op) {
  STAPO_CHECK(C > 0 && C % 8 == 0, op, ": C = ", C, " must be a positive multiple of 8");
  const int threads = ceil_div(ceil_div(C / 8, RMSNORM_SLICES), 32) * 32;
  STAPO_CHECK(threads <= RMSNORM_MAX_THREADS, op, ": C = ", C, " exceeds the largest supported hidden size ",
              8 * RMSNORM_SLICES * RMSNORM_MAX_THREADS);
  return threads;
}

void rmsnorm_forward(bf16* out, float* rstd, bf16* residual_out, const bf16* residual_in, const bf16* delta,
                     const bf16* weight, int N, int C, float eps, cudaStream_t stream) {
  const int threads = rmsnorm_threads(C, "rmsnorm_forward");
  check_aligned16(out, "rmsnorm_forward", "out");
  check_aligned16(residual_in, "rmsnorm_forward", "residual_in");
  check_aligned16(weight, "rmsnorm_forward", "weight");
  if (delta) {
    check_aligned16(delta, "rmsnorm_forward", "delta");
    STAPO_CHECK(residual_out != nullptr, "rmsnorm_forward: residual_out is required when delta is given");
    check_aligned16(residual_out, "rmsnorm_forward", "residual_out");
  }
  if (N == 0) return;
  rmsnorm_forward_kernel<<<N, threads, 0, stream>>>(out, rstd, residual_out, residual_in, delta, weight, C, eps);
  cudaCheck(cudaGetLastError());
}

size_t rmsnorm_backward_scratch_floats(int C) { return (size_t)RMSNORM_BACKWARD_BLOCKS * C; }

void rmsnorm_backward(bf16* dinp, float* dweight, float* scratch, const bf16* dout, const bf16* inp,
                      const bf16* weight, const float* rstd, int N, int C, cudaStream_t stream) {
  const int threads = rmsnorm_threads(C, "rmsnorm_backward");
  check_aligned16(dinp, "rmsnorm_backward", "dinp");
  check_aligned16(dout, "rmsnorm_backward", "dout");
  check_aligned16(inp, "rmsnorm_backward", "inp");
  check_aligned16(weight, "rmsnorm_backward", "weight");
  check_aligned16(scratch, "rmsnorm_backward", "scratch");
  if (N == 0) return;
  const int blocks = N < RMSNORM_BACKWARD_BLOCKS ? N : RMSNORM_BACKWARD_BLOCKS;
  rmsnorm_backward_kernel<<<blocks, threads, 0, stream>>>(dinp, scratch, dout, inp, weight, rstd, N, C);
  cudaCheck(cudaGetLastError());
  rmsnorm_dweight_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(dweight, scratch, blocks, C);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
