// RMSNorm forward/backward fused with the residual add (math in rmsnorm.h).
#include <algorithm>

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
// The warp-per-row backward: 4 warps (rows in flight) per block, up to 8 slices per lane (C ≤ 2048).
constexpr int RMSNORM_WARP_THREADS = 128;
constexpr int RMSNORM_WARP_MAX_SLICES = 8;

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

// One warp per row: no __syncthreads in the row loop, and a whole block's rows in flight at once at C ≤ 2048, where
// the block kernel above has only C/32 threads per row. Lane l owns the 8-channel slices l, l + 32, ... of a row
// (SLICES of them: C ≤ 256·SLICES) and keeps only its dweight sums in registers; the second pass over the row
// reads x, dout and weight again (from L1: the row was just read). The block's warps add their partial dweight
// into shared memory in warp order, so scratch row b (one per block, as above) is deterministic.
template <int SLICES>
__global__ void __launch_bounds__(RMSNORM_WARP_THREADS)
    rmsnorm_backward_warp_kernel(bf16* dinp, float* scratch, const bf16* dout, const bf16* inp, const bf16* weight,
                                 const float* rstd, int N, int C) {
  extern __shared__ float block_dweight[];  // (C)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  float dweight_acc[SLICES][8] = {};
  for (int n = blockIdx.x * warps + warp; n < N; n += gridDim.x * warps) {
    const size_t row = (size_t)n * C;
    const float r = rstd[n];
    float g_dot_x = 0.0f;
#pragma unroll
    for (int s = 0; s < SLICES; ++s) {
      const int c = (lane + 32 * s) * 8;
      if (c >= C) continue;
      float x[8], g[8], w[8];
      load_bf16x8(x, inp + row + c);
      load_bf16x8(g, dout + row + c);
      load_bf16x8(w, weight + c);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        dweight_acc[s][e] += g[e] * x[e] * r;
        g_dot_x += g[e] * w[e] * x[e];
      }
    }
    const float coeff = warp_sum(g_dot_x) * r * r * r / C;
#pragma unroll
    for (int s = 0; s < SLICES; ++s) {
      const int c = (lane + 32 * s) * 8;
      if (c >= C) continue;
      float x[8], g[8], w[8], d[8];
      load_bf16x8(x, inp + row + c);
      load_bf16x8(g, dout + row + c);
      load_bf16x8(w, weight + c);
      load_bf16x8(d, dinp + row + c);
#pragma unroll
      for (int e = 0; e < 8; ++e) d[e] += r * (g[e] * w[e]) - coeff * x[e];
      store_bf16x8(dinp + row + c, d);
    }
  }
  for (int w = 0; w < warps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int s = 0; s < SLICES; ++s) {
        const int c = (lane + 32 * s) * 8;
        if (c >= C) continue;
#pragma unroll
        for (int e = 0; e < 8; ++e) block_dweight[c + e] = (w == 0 ? 0.0f : block_dweight[c + e]) + dweight_acc[s][e];
      }
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < C; c += blockDim.x) scratch[(size_t)blockIdx.x * C + c] = block_dweight[c];
}

// One thread per channel: dweight[c] (+)= Σ_b scratch[b][c], b in increasing order.
__global__ void rmsnorm_dweight_kernel(float* dweight, const float* scratch, int blocks, int C, bool accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float partials = 0.0f;
  for (int b = 0; b < blocks; ++b) partials += scratch[(size_t)b * C + c];
  dweight[c] = accumulate ? dweight[c] + partials : partials;
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

static void rmsnorm_backward_check(bf16* dinp, float* scratch, const bf16* dout, const bf16* inp, const bf16* weight,
                                   const char* op) {
  check_aligned16(dinp, op, "dinp");
  check_aligned16(dout, op, "dout");
  check_aligned16(inp, op, "inp");
  check_aligned16(weight, op, "weight");
  check_aligned16(scratch, op, "scratch");
}

bool rmsnorm_backward_warp_supported(int C) { return C > 0 && C % 8 == 0 && C <= 256 * RMSNORM_WARP_MAX_SLICES; }

void rmsnorm_backward(bf16* dinp, float* dweight, float* scratch, const bf16* dout, const bf16* inp,
                      const bf16* weight, const float* rstd, int N, int C, cudaStream_t stream, bool accumulate,
                      RmsnormBackwardKernel kernel) {
  const bool warp = kernel == RmsnormBackwardKernel::warp;
  const char* op = warp ? "rmsnorm_backward (warp per row)" : "rmsnorm_backward";
  const int threads = rmsnorm_threads(C, op);
  STAPO_CHECK(!warp || rmsnorm_backward_warp_supported(C), op, ": C = ", C, " is wider than its ",
              256 * RMSNORM_WARP_MAX_SLICES, " channels; use the block-per-row kernel (RmsnormBackwardKernel::block)");
  rmsnorm_backward_check(dinp, scratch, dout, inp, weight, op);
  if (N == 0) return;
  int blocks = 0;
  if (warp) {
    const int warps = RMSNORM_WARP_THREADS / 32, slices = ceil_div(C, 256);
    blocks = std::min(ceil_div(N, warps), RMSNORM_BACKWARD_BLOCKS);
    const size_t smem = (size_t)C * sizeof(float);
    auto launch = [&](auto kernel_fn) {
      kernel_fn<<<blocks, RMSNORM_WARP_THREADS, smem, stream>>>(dinp, scratch, dout, inp, weight, rstd, N, C);
    };
    if (slices <= 1) launch(rmsnorm_backward_warp_kernel<1>);
    else if (slices <= 2) launch(rmsnorm_backward_warp_kernel<2>);
    else if (slices <= 4) launch(rmsnorm_backward_warp_kernel<4>);
    else launch(rmsnorm_backward_warp_kernel<8>);
  } else {
    blocks = N < RMSNORM_BACKWARD_BLOCKS ? N : RMSNORM_BACKWARD_BLOCKS;
    rmsnorm_backward_kernel<<<blocks, threads, 0, stream>>>(dinp, scratch, dout, inp, weight, rstd, N, C);
  }
  cudaCheck(cudaGetLastError());
  rmsnorm_dweight_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(dweight, scratch, blocks, C, accumulate);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
