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
#include <vector>

#include "model/ops/adamw.h"  // defines: AdamWState, AdamWStep, MasterKind, MomentKind
#include "model/params.h"     // defines: ParamSpec

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

// Under 8-bit moments (--moments 8bit) the input embedding keeps fp32 m and v, every other tensor 8-bit ones, as
// bitsandbytes does (its StableEmbedding asks 32-bit optimizer state for its weight). A row of the embedding gets a
// gradient only when its token is in the batch, so its 2048-element blocks mix fresh and decaying moments; in 8
// bits its update missed the fp32 one by 2.2 times that update's size (docs/training.md). Tied to the lm_head it
// is the same tensor, and stays fp32. The one rule: both engines, the optimizer state file and the memory plan ask it.
bool keeps_fp32_moments(const ParamSpec& spec);

// Where each tensor's moments live under 8-bit moments: the tensors that keep fp32 ones back to back in one pair
// of fp32 arrays (m, v), the others' codes back to back in one pair of byte arrays and their absmax blocks in
// order; every tensor's start rounded up to a multiple of `align` elements (1: packed, as the CPU engine and the
// file hold them; the CUDA engine's kParamAlign).
struct Q8MomentLayout {
  std::vector<MomentKind> kind;  // per tensor (model/params.h order): fp32 where keeps_fp32_moments, else q8
  std::vector<size_t> offset;    // per tensor: its first element in the fp32 moments or in the codes, by kind
  std::vector<size_t> block;     // per q8 tensor: its first absmax block (0 for the fp32 ones)
  size_t fp32_elements = 0, code_elements = 0, blocks = 0;  // the arrays' sizes, each a multiple of `align`
};
Q8MomentLayout q8_moment_layout(const std::vector<ParamSpec>& specs, size_t align);

}  // namespace stapo
