// AdamW over a tensor's compact optimizer state (model/ops/adamw.h): fp32 or split master weights or bf16 weights
// only, fp32 or 8-bit block-wise moments (Dettmers et al., ICLR 2022), fp32 or bf16 gradients. The GPU twin of
// train/adamw.h's adamw_compact_update, bit for bit: both run model/ops/adamw.h's element functions in float.
//   g = grad · clip_scale;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   p = p·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
// One block of 256 threads per quantisation block of kQuantBlock = 2048 elements (8 per thread, strided so that a
// warp's accesses are consecutive): it decodes m and v with the block's old absmax, updates them and the weight,
// then (8-bit) reduces the new absmax of |m| and of v over the block and encodes the moments with it.
// Layouts (n elements, 64-bit indices): state.weights (n) bf16 bit patterns (the model's __nv_bfloat16 buffer);
// state.master (n) fp32; state.low (n) int16; state.m, state.v (n) fp32; state.m_code, state.v_code (n) uint8;
// state.m_absmax, state.v_absmax (quant_blocks(n)) fp32; grads (n). clip_scale: one device float, or nullptr for
// 1. apply: one device int, 0 leaves everything untouched (a step whose norm or loss was not finite), or nullptr
// to always update. seed: MasterKind::none's stochastic rounding (hashed with the element's index in the tensor,
// state.index_base + i: a data-parallel rank's part of a tensor gets the bits the whole tensor's update would).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "model/ops/adamw.h"  // defines: AdamWState, AdamWStep, MasterKind, MomentKind

namespace stapo {

void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const float* grads,
                          const AdamWStep<float>& step, const float* clip_scale, const int* apply, uint32_t seed,
                          cudaStream_t stream);
void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments,
                          const __nv_bfloat16* grads, const AdamWStep<float>& step, const float* clip_scale,
                          const int* apply, uint32_t seed, cudaStream_t stream);

// The state of a tensor of fp32 weights x (state.n): state.weights = split_high(x) (bf16 rounded to nearest, ties
// away from zero: what every master kind's update writes), and state.master = x (fp32; x may be state.master
// itself) or state.low = split_low(x) (split). Moments are not touched (the caller zeroes them).
void adamw_compact_init(const AdamWState& state, MasterKind master, const float* x, cudaStream_t stream);

}  // namespace stapo
