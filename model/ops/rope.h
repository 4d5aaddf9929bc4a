// Rotary position embedding in HF's rotate-half convention (LlamaRotaryEmbedding + apply_rotary_pos_emb):
// for each head, pair channel i with channel i + D/2 (i < D/2), angle a = position · inv_freq[i]:
//   x'[i]       = x[i]·cos a − x[i+D/2]·sin a
//   x'[i+D/2]   = x[i+D/2]·cos a + x[i]·sin a
// inv_freq[i] = theta^(−2i/D), optionally rescaled by Llama 3's rule (low frequencies divided by `factor`,
// high ones kept, a smooth blend in between).
//   x (N, nh, D) rotated in place; positions (N), restarting at 0 for every packed sequence; inv_freq (D/2).
// Backward rotates the gradient by −a in place (a rotation's transpose is its inverse).
#pragma once
#include <cstdint>
#include <vector>

namespace stapo {

struct RopeScaling {
  bool llama3 = false;  // false: plain RoPE, the fields below are unused
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 1.0;
  int original_max_position_embeddings = 0;
};

template <typename T>
std::vector<T> rope_inv_freq(int D, double theta, const RopeScaling& scaling);  // (D/2)

template <typename T>
void rope_forward(T* x, const int32_t* positions, const T* inv_freq, int N, int nh, int D);

template <typename T>
void rope_backward(T* dx, const int32_t* positions, const T* inv_freq, int N, int nh, int D);

}  // namespace stapo
