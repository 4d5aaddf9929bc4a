// Device helpers shared by the kernels (included by .cu files only): 128-bit bf16 loads/stores,
// warp and block reductions, and the host-side preconditions every launcher checks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/error.h"
#include "kernels/cuda_common.h"  // defines: cudaCheck

namespace stapo {

using bf16 = __nv_bfloat16;

inline __host__ __device__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Eight consecutive bf16 (16 bytes, one 128-bit transaction) to and from fp32. `p` must be 16-byte aligned.
__device__ inline void load_bf16x8(float out[8], const bf16* p) {
  int4 raw = *reinterpret_cast<const int4*>(p);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __bfloat1622float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ inline void store_bf16x8(bf16* p, const float in[8]) {
  int4 raw;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<int4*>(p) = raw;
}

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum or max over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The fixed reduction order makes the result deterministic.
template <bool MAX>
__device__ inline float block_reduce(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = MAX ? warp_max(v) : warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : (MAX ? -INFINITY : 0.0f);
  v = MAX ? warp_max(v) : warp_sum(v);
  __syncthreads();  // partial[] may be reused by the next call
  return v;
}

__device__ inline float block_sum(float v) { return block_reduce<false>(v); }
__device__ inline float block_max(float v) { return block_reduce<true>(v); }

// Hopper's per-block limit of opt-in shared memory.
constexpr size_t MAX_BLOCK_SMEM = 227 * 1024;

// Kernels using more than 48 KiB of dynamic shared memory must opt in (cheap; done at every launch).
template <typename Kernel>
inline void allow_smem(Kernel kernel, size_t bytes) {
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Launcher preconditions: the kernels use 128-bit accesses, so pointers must be 16-byte aligned.
inline void check_aligned16(const void* p, const char* op, const char* tensor) {
  STAPO_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, op, ": tensor ", tensor,
              " is not 16-byte aligned (allocate with cudaMalloc and offset by multiples of 8 elements)");
}

}  // namespace stapo
