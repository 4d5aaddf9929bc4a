// Causal grouped-query attention, flash-attention style: the GPU twin of model/ops/attention.h.
//   q, out, dq, dout (N, H, D); k, v, dk, dv (N, Hkv, D) bf16; lse (N, H) fp32; segments (N) int32; N = rows·T.
//   Query i sees key j iff same row, segments[i] == segments[j] >= 0, j <= i and (window > 0) i − j < window.
//   out = softmax(q·kᵀ/√D over the visible keys)·v, lse = log Σ exp(score); a query that sees nothing
//   (padding) gets out = 0 and lse = −inf. Backward writes (=) dq, dk, dv.
// Never materialises (T, T): the forward streams key tiles through shared memory with an online softmax
// (running max m, running sum l, rescaled accumulator), the backward recomputes p = exp(score − lse) tile by
// tile. The backward is two deterministic kernels, no atomics: one per key tile (dk, dv, looping over the
// query heads that share the kv head), one per query tile (dq); both first need
//   delta_i = Σ_d dout_i·out_i   (fp32 scratch of N·H floats).
// Key tiles wholly after a query tile (causal) or wholly before its window are never visited; a visited tile in
// which no pair is visible (another packed sequence) is skipped before it is loaded; the rest is masked per
// element. fp32 in shared memory and registers; D ∈ {64, 128}.
//
// Two implementations with one interface: attention_forward / attention_backward are the SIMT kernels above
// (kernels/attention.cu, train_stapo's --attention flash); attention_flash2_forward / attention_flash2_backward
// (the default) compute the same on tensor cores, FlashAttention-2's design (bf16 mma.sync with fp32
// accumulation, P and dS rounded to bf16 before their products; kernels/attention_flash2.cuh), same tensors,
// scratch and masking rule.
//
// attention_flash2_backward_atomic is FlashAttention-2's backward: the key-tile kernel also computes each visited
// query tile's dQ part dS·K and adds it to an fp32 (N, H, D) accumulator with atomic adds (zeroed by the call), and
// a small kernel converts that to bf16 dq: 5 tile products per visited tile instead of 7 (no dq kernel recomputing
// S and dP). The adds land in any order, so dq's last bits vary from run to run (dk, dv do not): train_stapo runs
// it only under --attention flash2-atomic, never where bit-equal recomputation is relied on. Its scratch is the
// accumulator then δ: attention_flash2_backward_atomic_scratch_floats, N·H·(D + 1), 16-byte aligned.
//
// attention_flash2_narrow_forward / _backward are the tensor-core kernels with 32-row tiles streamed through all
// three (32-key tiles in the forward and dq, 32-query tiles in dk, dv; at D = 128 the backward's already are):
// fewer registers, so more blocks per SM, for twice the steps (train_stapo's --attention flash2-narrow, an
// experiment until timed; dev/cuda/attention.cu's version 8). Same tensors and scratch as attention_flash2_*.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "model/ops/attention.h"  // defines: AttentionShape

namespace stapo {

void attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                       const __nv_bfloat16* v, const AttentionShape& shape, const int32_t* segments,
                       cudaStream_t stream);

size_t attention_backward_scratch_floats(const AttentionShape& shape);  // N·H

void attention_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, float* scratch,
                        const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const AttentionShape& shape, const int32_t* segments, cudaStream_t stream);

void attention_flash2_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                              const __nv_bfloat16* v, const AttentionShape& shape, const int32_t* segments,
                              cudaStream_t stream);

void attention_flash2_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, float* scratch,
                               const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                               const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                               const AttentionShape& shape, const int32_t* segments, cudaStream_t stream);

void attention_flash2_narrow_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                                     const __nv_bfloat16* v, const AttentionShape& shape, const int32_t* segments,
                                     cudaStream_t stream);

void attention_flash2_narrow_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, float* scratch,
                                      const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                                      const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                      const AttentionShape& shape, const int32_t* segments, cudaStream_t stream);

size_t attention_flash2_backward_atomic_scratch_floats(const AttentionShape& shape);  // N·H·(D + 1)

void attention_flash2_backward_atomic(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, float* scratch,
                                      const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                                      const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                      const AttentionShape& shape, const int32_t* segments, cudaStream_t stream);

// Shared by both implementations' launchers: the shape and alignment preconditions (stapo::Error naming `op` and
// the tensor), and the backward's first step delta (N, H) = Σ_d dout·out in fp32.
void attention_check(const AttentionShape& shape, const char* op,
                     std::initializer_list<std::pair<const char*, const void*>> tensors);
void attention_delta(float* delta, const __nv_bfloat16* dout, const __nv_bfloat16* out, const AttentionShape& shape,
                     cudaStream_t stream);

}  // namespace stapo
