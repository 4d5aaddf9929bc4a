// Token embedding: out[i] = table[tokens[i]].
//   tokens (N), table (V, C), out (N, C).
// Backward scatters: dtable[tokens[i]] += dout[i] (a parameter gradient, so +=). Tokens repeat, so the
// backward parallelises over channels, never over tokens (no two threads touch the same element).
#pragma once
#include <cstdint>

namespace stapo {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int N, int C);

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int N, int C);

}  // namespace stapo
