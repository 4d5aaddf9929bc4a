// lm_head fused with the per-token outputs the losses need, never keeping an (N, V) buffer:
//   logits = h · wᵀ (chunks of tokens at a time),
//   logp[i]    = logits[i, targets[i]] − LSE_i
//   entropy[i] = LSE_i − Σ_v p_v · logits[i, v]     (p = softmax(logits[i]))
// Positions with targets[i] < 0 get logp = entropy = 0 and no gradient.
//   h, dh (N, C); w, dw (V, C) (the embedding table when tied); targets, logp, entropy, dlogp (N).
// Backward (gradient of Σ dlogp[i]·logp[i]; entropy is a reported statistic and takes no gradient)
// recomputes each chunk's logits: d logits[i] = dlogp[i] · (onehot(targets[i]) − p).
// dh is written (=), dw accumulated (+=).
#pragma once
#include <cstdint>

namespace stapo {

template <typename T>
void lm_head_forward(T* logp, T* entropy, const T* h, const T* w, const int32_t* targets, int N, int C, int V);

template <typename T>
void lm_head_backward(T* dh, T* dw, const T* dlogp, const T* h, const T* w, const int32_t* targets, int N, int C,
                      int V);

}  // namespace stapo
