// AdamW (decoupled weight decay, Loshchilov & Hutter), the update torch.optim.AdamW performs:
//   p ← p − lr·wd·p                    (decay first, on the parameter itself, not through the moments)
//   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²     with g = grad_scale·grad (clipping)
//   p ← p − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
// t is the 1-based update count. Weight decay is passed per tensor: the trainer gives 0 to RMSNorm weights
// (and would to biases; Llama/Mistral have none), as HF's Trainer does, because shrinking a norm's gain
// towards 0 is not a regulariser but a change of the function's scale. Moments have the parameters' type T.
//
// adamw_compact_update is the CPU twin of the CUDA kernel kernels/adamw_compact.h: the same update in float
// arithmetic over the compact state of model/ops/adamw.h (split master weights, 8-bit block-wise moments), bit
// for bit the kernel's result.
#pragma once
#include <cstddef>
#include <cstdint>

#include "model/ops/adamw.h"  // defines: AdamWState, AdamWStep, MasterKind, MomentKind

namespace stapo {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// One update of n parameters: p, grad (n) of type T; m, v (n) the moments, updated in place.
template <typename T>
void adamw_update(T* p, const T* grad, T* m, T* v, size_t n, double lr, double weight_decay,
                  const AdamWConfig& config, int64_t t, double grad_scale);

// One update of one tensor's compact state, or a part's (every pointer the kinds need set), from fp32 gradients
// `grads` (n) scaled by `clip`; `seed` feeds MasterKind::none's stochastic rounding (the element's index within the
// tensor, state.index_base + i, is hashed with it). Float arithmetic, OpenMP over the quantisation blocks: any thread count gives the same bits.
void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const float* grads,
                          const AdamWStep<float>& step, float clip, uint32_t seed);

}  // namespace stapo
