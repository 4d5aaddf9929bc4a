// The warp-level instructions the tensor-core attention kernels (kernels/attention_flash2.cuh) are made of:
// bf16 mma.sync m16n8k16 with fp32 accumulation, ldmatrix (plain and transposed), cp.async with zero fill,
// shuffles, votes, block barriers, fp32 atomic adds to global memory (the atomic backward's dQ) and the fast 2^x.
// On the device each is one PTX instruction (or an intrinsic). Compiled
// with STAPO_WARP_EMULATION (a host compiler, no nvcc), they are only declared here: the host emulation in
// tests/kernels/warp_emulator.cpp defines them, so the kernels' own source runs on the CPU, one fiber per
// thread, and tests/kernels/test_attention_flash2_emulated.cpp checks it against the CPU twin without a GPU.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; g = lane / 4, t =
// lane % 4). Each 32-bit register holds two bf16, the lower column (or row, for B) in its low half.
//   A (16×16, row-major):  a[0] = (g, 2t..2t+1)  a[1] = (g+8, 2t..)  a[2] = (g, 2t+8..)  a[3] = (g+8, 2t+8..)
//   B (16×8, k × n):        b[0] = (k 2t..2t+1, n g)                 b[1] = (k 2t+8..2t+9, n g)
//   C, D (16×8, fp32):      c[0], c[1] = (g, 2t), (g, 2t+1)          c[2], c[3] = (g+8, 2t), (g+8, 2t+1)
// ldmatrix .x4: lanes 8i..8i+7 give the 16-byte row addresses of 8×8 matrix i; lane l receives, in r[i], row l/4,
// columns 2(l%4)..2(l%4)+1 of matrix i; with .trans, rows 2(l%4)..2(l%4)+1 of column l/4.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace stapo::warp {

// Two floats rounded to bf16 in one register, `lo` in the low half (the operand order of an mma fragment).
__host__ __device__ inline uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

#if defined(STAPO_WARP_EMULATION)

// 2^x as ex2.approx.ftz.f32 gives it (within 2 ulp): a result below the least normal float is 0, as the device
// flushes it; 2^−inf = 0.
inline float exp2_approx(float x) {
  const float y = std::exp2(x);
  return y < FLT_MIN ? 0.0f : y;
}

int thread_index();                  // threadIdx.x
void block_sync();                   // __syncthreads()
float shfl_xor(float value, int lane_mask);
int shfl_xor(int value, int lane_mask);
bool warp_all(bool predicate);       // __all_sync over the full warp
// dst (shared) ← 16 or 4 bytes of src (global); with fill = false no byte is read and dst is zeroed.
void cp_async_16(void* dst, const void* src, bool fill);
void cp_async_4(void* dst, const void* src, bool fill);
void cp_async_commit();
void cp_async_wait_pending(int groups);  // cp.async.wait_group: at most `groups` committed groups still pending
template <int GROUPS>
inline void cp_async_wait() {
  cp_async_wait_pending(GROUPS);
}
void ldmatrix_x4(uint32_t r[4], const void* smem_row);
void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row);
void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]);  // d += a·b
void red_add(float* dst, float value);  // *dst += value in global memory, atomically, nothing returned

#else

__device__ __forceinline__ int thread_index() { return (int)threadIdx.x; }
__device__ __forceinline__ void block_sync() { __syncthreads(); }
__device__ __forceinline__ float shfl_xor(float value, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, value, lane_mask);
}
__device__ __forceinline__ int shfl_xor(int value, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, value, lane_mask);
}
__device__ __forceinline__ bool warp_all(bool predicate) { return __all_sync(0xffffffffu, predicate) != 0; }

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// src-size 0 reads nothing and zero-fills the destination (rows past the end of a sequence row).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool fill) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(fill ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool fill) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(fill ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int GROUPS>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(GROUPS) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row))
               : "memory");
}

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One MUFU.EX2: exp2f proper adds a range test and two multiplies around it to keep results below 2^−126 (none
// that matters to a probability) and costs a branch where the compiler cannot predicate it.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// red, not atom: no old value comes back, so the warp does not wait for the add.
__device__ __forceinline__ void red_add(float* dst, float value) {
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(dst), "f"(value) : "memory");
}

#endif

}  // namespace stapo::warp
