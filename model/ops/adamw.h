// AdamW per element, and the compact ways of storing its state, as one host+device header: the CPU twins in
// train/adamw.h (F = double for the CPU trainer, F = float for the twin of the kernel) and the CUDA kernel
// kernels/adamw_compact.cu (F = float) compile the same functions, so the twin and the kernel agree bit for bit.
// It sits in model/ops/ for the same reason as preference_loss.h: below both of its users.
//
// The update is torch.optim.AdamW's (train/adamw.h has the formula). Every multiply-add that may be fused is
// written as an explicit fma: compilers contract a·b + c into an fma on their own (GCC in its default GNU mode,
// nvcc always), each in its own way; written out, host and device round identically.
//
// Weights (MasterKind):
//   fp32   an fp32 master copy per weight, and the bf16 weights the model computes with (round to nearest even);
//   split  the bf16 weights plus a 16-bit remainder `low`: together they are the fp32 master exactly, at 2 bytes
//          instead of 4. bf16 = the master rounded to nearest with ties away from zero (in bit patterns:
//          (bits + 0x8000) >> 16), low = bits − (bf16 << 16) ∈ [−32768, 32767]. Ties to even would need 17 bits
//          (the two masters on either side of a tie would share bf16 and low), so the bf16 weights differ from
//          the fp32 path's only where the master lies exactly halfway between two bf16 values.
//   none   bf16 weights only, the update rounded stochastically (unbiased; llm.c's choice): lossy.
// Moments (MomentKind):
//   fp32   m, v in fp32;
//   q8     8-bit block-wise dynamic quantisation, Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit Optimizers via
//          Block-wise Quantization" (ICLR 2022, arXiv:2110.02861): each block of kQuantBlock consecutive elements
//          of a tensor keeps its absmax (fp32) and one byte per element, the index of the nearest value of a
//          dynamic map (below) to x / absmax: signed for m, unsigned for v. Each step decodes m and v, updates
//          them in fp32, updates the weight from the fp32 values, then encodes them again with the block's new
//          absmax (as the paper does).
// The dynamic map (the paper's "dynamic tree quantization", from Dettmers 2016, "8-bit Approximations for
// Parallelism in Deep Learning"): after the sign bit, e zero bits give the decimal exponent 10^-e, a one bit
// ends them, and the remaining f bits place the value linearly in (0.1, 1]. Our values are the right ends of the
// 2^f equal steps of that interval,
//   10^-e · (0.1 + 0.9·(k + 1) / 2^f),  k = 0 .. 2^f − 1,
// so 1.0 (the block's absmax element) is exact, and the largest value of decade e + 1 meets decade e at
// 0.1·10^-e. Signed (m): e = 0..6 with f = 6 − e, i.e. 64 + 32 + ... + 1 = 127 values per sign, plus ±0 (the
// all-zero codes): 256 codes, values from ±1e-6 to ±1. Unsigned (v): the sign bit becomes a fraction bit,
// e = 0..7 with f = 7 − e: 255 values from 1e-7 to 1, plus 0. The codes are indices into the map sorted
// ascending (the bit layout above only defines the set of values); encoding picks the nearest value, i.e.
// counts the midpoints between neighbours that lie below x. Consequence of the map's floor: an element whose v
// is below 5e-8 of its block's largest is stored as 0 (m below 5e-7 likewise); the paper's maps have such a
// floor too (docs/kernels.md measures what it costs).
#pragma once

#if defined(__CUDACC__)
#ifndef STAPO_HD
#define STAPO_HD __host__ __device__
#endif
#else
#ifndef STAPO_HD
#define STAPO_HD
#endif
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>

#include "common/error.h"  // defines: STAPO_CHECK (host-only checks)

namespace stapo {

enum class MasterKind : int { fp32, split, none };
enum class MomentKind : int { fp32, q8 };

constexpr int kQuantBlock = 2048;  // elements per absmax block (the paper's block size)
constexpr int kQuantCodes = 256;

// The quantisation blocks of an n-element tensor: one absmax per block and moment.
STAPO_HD inline size_t quant_blocks(size_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

// ---- the update of one element ----

// The per-step constants (host-computed, in double, then rounded to F).
template <typename F>
struct AdamWStep {
  F lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  F decay;                                // 1 − lr·weight_decay
  F bias_correction1, bias_correction2;   // 1 − β1^t, 1 − β2^t
};

template <typename F>
AdamWStep<F> adamw_step_make(double lr, double weight_decay, double beta1, double beta2, double eps, int64_t t) {
  AdamWStep<F> s;
  s.lr = F(lr);
  s.beta1 = F(beta1);
  s.beta2 = F(beta2);
  s.one_minus_beta1 = F(1.0 - beta1);
  s.one_minus_beta2 = F(1.0 - beta2);
  s.eps = F(eps);
  s.decay = F(1.0 - lr * weight_decay);
  s.bias_correction1 = F(1.0 - pow(beta1, double(t)));
  s.bias_correction2 = F(1.0 - pow(beta2, double(t)));
  return s;
}

STAPO_HD inline float adamw_fma(float a, float b, float c) { return fmaf(a, b, c); }
STAPO_HD inline double adamw_fma(double a, double b, double c) { return fma(a, b, c); }
STAPO_HD inline float adamw_sqrt(float x) { return sqrtf(x); }
STAPO_HD inline double adamw_sqrt(double x) { return sqrt(x); }

// m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²   (g already scaled by the clip factor)
template <typename F>
STAPO_HD inline void adamw_moments(F g, F& m, F& v, const AdamWStep<F>& s) {
  m = adamw_fma(s.beta1, m, s.one_minus_beta1 * g);
  v = adamw_fma(s.beta2, v, s.one_minus_beta2 * (g * g));
}

// p·(1 − lr·wd) − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
template <typename F>
STAPO_HD inline F adamw_apply(F p, F m, F v, const AdamWStep<F>& s) {
  const F step = (m / s.bias_correction1) / (adamw_sqrt(v / s.bias_correction2) + s.eps);
  return adamw_fma(-s.lr, step, p * s.decay);
}

// ---- bf16 and the split master ----

STAPO_HD inline uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
#endif
}

STAPO_HD inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, 4);
  return x;
#endif
}

STAPO_HD inline float bf16_bits_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

// Round to nearest, ties to even; NaN becomes 0x7FFF (as cuda_bf16.h's __float2bfloat16_rn).
STAPO_HD inline uint16_t bf16_round_nearest(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Round up with probability (dropped low 16 bits) / 2^16: the expectation is x itself.
STAPO_HD inline uint16_t bf16_round_stochastic(float x, uint32_t random) {
  return uint16_t((float_bits(x) + (random & 0xFFFFu)) >> 16);
}

// A 32-bit hash (murmur3's finaliser) of (seed, index): independent random bits per element and step.
STAPO_HD inline uint32_t hash_index(uint32_t seed, uint32_t index) {
  uint32_t h = index * 0x9E3779B1u ^ seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// master → (bf16 high half rounded to nearest, ties away from zero; signed remainder). Exact for every bit
// pattern, NaNs included: split_join(split_high(x), split_low(x)) has the bits of x.
STAPO_HD inline uint16_t split_high(float master) { return uint16_t((float_bits(master) + 0x8000u) >> 16); }
STAPO_HD inline int16_t split_low(float master) {
  const uint32_t u = float_bits(master);
  return int16_t(int32_t(u - (uint32_t(split_high(master)) << 16)));
}
STAPO_HD inline float split_join(uint16_t high, int16_t low) {
  return bits_float((uint32_t(high) << 16) + uint32_t(int32_t(low)));
}

// ---- 8-bit dynamic quantisation ----

// One map: values ascending, and the midpoints between neighbours (encoding's thresholds).
struct QuantMap {
  float value[kQuantCodes];
  float bound[kQuantCodes - 1];  // bound[i] = (value[i] + value[i+1]) / 2
};

STAPO_HD inline float quant_bound(const float* value, int i) { return (value[i] + value[i + 1]) * 0.5f; }

// The map for m (is_signed) or v, as described at the top; host only.
inline QuantMap quant_map(bool is_signed) {
  double values[kQuantCodes];
  int count = 0;
  const int top_bits = is_signed ? 6 : 7;  // fraction bits of decade 0
  for (int e = 0; e <= top_bits; ++e) {
    const int steps = 1 << (top_bits - e);
    for (int k = 0; k < steps; ++k) {
      const double x = pow(10.0, -e) * (0.1 + 0.9 * (k + 1) / steps);
      values[count++] = x;
      if (is_signed) values[count++] = -x;
    }
  }
  values[count++] = 0.0;
  if (is_signed) values[count++] = 0.0;  // −0 and +0: two codes, one value
  std::sort(values, values + count);
  QuantMap map;
  for (int i = 0; i < kQuantCodes; ++i) map.value[i] = float(values[i]);
  for (int i = 0; i + 1 < kQuantCodes; ++i) map.bound[i] = quant_bound(map.value, i);
  return map;
}

// The code of x (already divided by its block's absmax): the number of bounds below x, i.e. the index of the
// nearest value (the lower one at an exact midpoint). `bound` has kQuantCodes − 1 ascending entries.
STAPO_HD inline uint8_t quant_encode(const float* bound, float x) {
  int lo = 0, hi = kQuantCodes - 1;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (bound[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return uint8_t(lo);
}

// x / absmax, 0 for an all-zero block.
STAPO_HD inline float quant_normalise(float x, float absmax) { return absmax > 0.0f ? x / absmax : 0.0f; }

// ---- one tensor's optimizer state ----

// Where one tensor's state lives (n elements), or a part of a tensor's (a data-parallel rank's ZeRO-1 shard);
// each pointer is used only by the kinds that name it.
struct AdamWState {
  size_t n = 0;
  // Element 0's index in its whole tensor: stochastic rounding hashes index_base + i, so the bits do not depend on
  // how the tensor was split over ranks; q8 blocks start at multiples of kQuantBlock from it.
  size_t index_base = 0;
  uint16_t* weights = nullptr;  // (n) bf16 bit patterns, what the model computes with; may be null for
                                //     MasterKind::fp32 (the CPU engine's fp32 weights are the master)
  float* master = nullptr;      // (n) MasterKind::fp32
  int16_t* low = nullptr;       // (n) MasterKind::split: the master is split_join(weights, low)
  float *m = nullptr, *v = nullptr;                  // (n) MomentKind::fp32
  uint8_t *m_code = nullptr, *v_code = nullptr;      // (n) MomentKind::q8
  float *m_absmax = nullptr, *v_absmax = nullptr;    // (quant_blocks(n)) MomentKind::q8
};

// The pointers `master` and `moments` need, the bias corrections of `step` and the stochastic rounding's 32-bit
// index (host only; `op` names the caller in the error).
inline void adamw_state_check(const AdamWState& s, MasterKind master, MomentKind moments, const AdamWStep<float>& step,
                              bool need_weights, const char* op) {
  STAPO_CHECK(step.bias_correction1 > 0 && step.bias_correction2 > 0, op, ": bias corrections (",
              step.bias_correction1, ", ", step.bias_correction2, ") must be positive: the step t starts at 1 and "
              "β1, β2 lie in [0, 1)");
  STAPO_CHECK(s.weights || (!need_weights && master == MasterKind::fp32), op, ": state.weights (bf16) is required");
  STAPO_CHECK(master != MasterKind::fp32 || s.master, op, ": MasterKind::fp32 needs state.master");
  STAPO_CHECK(master != MasterKind::split || s.low, op, ": MasterKind::split needs state.low");
  // Beyond 2^32 elements two would hash the same index: one call per tensor.
  STAPO_CHECK(master != MasterKind::none || s.index_base + s.n <= size_t(UINT32_MAX) + 1, op, ": elements ",
              s.index_base, " to ", s.index_base + s.n, " of a tensor with stochastic rounding; update at most 2^32 "
              "elements per tensor");
  // A part's blocks must be the whole tensor's, else its absmax would not describe the same elements.
  STAPO_CHECK(moments != MomentKind::q8 || s.index_base % kQuantBlock == 0, op, ": 8-bit moments of a part starting at "
              "element ", s.index_base, " of its tensor, not a multiple of the block size ", kQuantBlock);
  STAPO_CHECK(moments != MomentKind::fp32 || (s.m && s.v), op, ": MomentKind::fp32 needs state.m and state.v");
  STAPO_CHECK(moments != MomentKind::q8 || (s.m_code && s.v_code && s.m_absmax && s.v_absmax), op,
              ": MomentKind::q8 needs state.m_code, v_code, m_absmax and v_absmax");
}

// What one element's step reads: its moments (fp32, or q8 decoded with the block's absmax of the previous step,
// `m_value`, `v_value` being the maps' values) and its weight in fp32 (the master, the split master joined, or the
// bf16 weight). Apart from the update (adamw_write) so that the kernel can have a thread's reads of all its
// elements in flight before its first store, which the compiler may not move a read past (the arrays may alias).
struct AdamWInputs {
  float m, v, p;
};

template <MasterKind K, MomentKind Q>
STAPO_HD inline AdamWInputs adamw_read(const AdamWState& s, size_t i, const float* m_value, const float* v_value,
                                       float m_absmax, float v_absmax) {
  AdamWInputs in;
  if (Q == MomentKind::fp32) {
    in.m = s.m[i];
    in.v = s.v[i];
  } else {
    in.m = m_value[s.m_code[i]] * m_absmax;
    in.v = v_value[s.v_code[i]] * v_absmax;
  }
  if (K == MasterKind::fp32)
    in.p = s.master[i];
  else if (K == MasterKind::split)
    in.p = split_join(s.weights[i], s.low[i]);
  else
    in.p = bf16_bits_to_float(s.weights[i]);
  return in;
}

// The step of element i from what adamw_read gave and g (the clipped gradient): the moments updated, the weight
// updated from them; fp32 moments are stored, q8 ones returned in m, v for adamw_encode once the block's new absmax
// is known. `seed`: MasterKind::none's rounding.
template <MasterKind K, MomentKind Q>
STAPO_HD inline void adamw_write(const AdamWState& s, size_t i, float g, const AdamWInputs& in,
                                 const AdamWStep<float>& step, uint32_t seed, float& m, float& v) {
  m = in.m;
  v = in.v;
  adamw_moments(g, m, v, step);
  const float p = adamw_apply(in.p, m, v, step);
  if (K == MasterKind::fp32) {
    s.master[i] = p;
    // The split master's high half (nearest, ties away from zero): the same bf16 weights as MasterKind::split,
    // so an engine's whole trajectory is the same with either master.
    if (s.weights) s.weights[i] = split_high(p);
  } else if (K == MasterKind::split) {
    s.weights[i] = split_high(p);
    s.low[i] = split_low(p);
  } else {
    // The low 32 bits of index_base + i, added in 32 bits (the 64-bit sum cost the kernel a register spill).
    s.weights[i] = bf16_round_stochastic(p, hash_index(seed, uint32_t(s.index_base) + uint32_t(i)));
  }
  if (Q == MomentKind::fp32) {
    s.m[i] = m;
    s.v[i] = v;
  }
}

// Stores element i's new q8 moments, given its block's new absmax of |m| and of v.
STAPO_HD inline void adamw_encode(const AdamWState& s, size_t i, float m, float v, const float* m_bound,
                                  const float* v_bound, float m_absmax, float v_absmax) {
  s.m_code[i] = quant_encode(m_bound, quant_normalise(m, m_absmax));
  s.v_code[i] = quant_encode(v_bound, quant_normalise(v, v_absmax));
}

}  // namespace stapo
