// Grouped-query causal attention with packed rows and an optional sliding window (HF's eager attention
// with the mask transformers builds for Llama/Mistral).
//   q, out, dq, dout (N, H, D); k, v, dk, dv (N, Hkv, D); lse (N, H); N = rows·T; query head h reads
//   key/value head h / (H / Hkv).
// Query i sees key j iff they are in the same row, segments[i] == segments[j] >= 0, j <= i and, with a
// window w > 0, i − j < w (TokenBatch's rule). A query that sees nothing (padding) gets out = 0.
//   out = softmax(q·kᵀ / sqrt(D) over the visible keys) · v;  lse = log Σ exp(score), kept for the backward
//   (the probabilities are recomputed from it instead of storing the (T, T) matrix per head).
// Backward writes (=) dq, dk, dv (activation gradients).
#pragma once
#include <cstdint>

namespace stapo {

struct AttentionShape {
  int rows = 0;    // rows of the batch
  int T = 0;       // positions per row
  int H = 0;       // query heads
  int Hkv = 0;     // key/value heads (H % Hkv == 0)
  int D = 0;       // head dim
  int window = 0;  // sliding window (Mistral); 0 = none
};

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& shape,
                       const int32_t* segments);

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q, const T* k,
                        const T* v, const AttentionShape& shape, const int32_t* segments);

}  // namespace stapo
