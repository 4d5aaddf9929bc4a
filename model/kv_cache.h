// Incremental decoding on the CPU reference: one token at a time through the CpuModel's weights, with the
// keys and values of earlier positions kept in a cache, so step t costs O(t) attention instead of O(t²).
// The math is the CpuModel forward (model/model.cpp) restricted to the newest position, built from the same
// ops (embedding, rmsnorm, rope, matmul, swiglu); only attention differs: one query row over the cache.
//   cache per layer: k, v (max_positions, Hkv, D), rotated keys as the full forward's attention sees them.
// Positions start at 0 (one sequence; no packing) and a sliding window (Mistral) limits the keys read.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"  // defines: CpuModel, ModelConfig

namespace stapo {

// Single-query grouped attention over cached keys: out (H, D) = softmax(q·kᵀ/√D) · v over the keys
// first..last (inclusive) of k, v (positions, Hkv, D); q (H, D).
template <typename T>
void attention_decode(T* out, const T* q, const T* k, const T* v, int first, int last, int H, int Hkv, int D);

template <typename T>
class KvDecoder {
 public:
  // Holds a reference to model (which must outlive the decoder) and room for max_positions tokens.
  KvDecoder(const CpuModel<T>& model, int max_positions);

  // Feeds `token` at the next position and returns the logits (V) of the token after it.
  const std::vector<T>& step(int32_t token);
  int position() const { return position_; }  // tokens fed so far
  int max_positions() const { return max_positions_; }
  void reset() { position_ = 0; }

 private:
  struct LayerWeights {
    const T *input_norm, *wq, *wk, *wv, *wo, *post_norm, *w_gate, *w_up, *w_down;
  };
  const ModelConfig& config_;
  int max_positions_;
  int position_ = 0;
  std::vector<LayerWeights> layers_;
  const T *embed_, *final_norm_, *lm_head_;
  std::vector<T> inv_freq_;
  std::vector<std::vector<T>> k_cache_, v_cache_;  // per layer (max_positions, Hkv, D)
  // Scratch for the newest position.
  std::vector<T> x_, norm_, q_, att_, gate_, up_, act_, logits_;
};

}  // namespace stapo
