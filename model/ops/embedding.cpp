// Token embedding lookup and its scatter-add backward (see embedding.h).
#include "model/ops/embedding.h"

#include <cstddef>
#include <cstring>

namespace stapo {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int N, int C) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i)
    std::memcpy(out + (size_t)i * C, table + (size_t)tokens[i] * C, sizeof(T) * C);
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int N, int C) {
  // Channels in blocks: each thread owns a column range of dtable, so repeated tokens never race.
  const int block = 64;
#pragma omp parallel for
  for (int c0 = 0; c0 < C; c0 += block) {
    int c1 = c0 + block < C ? c0 + block : C;
    for (int i = 0; i < N; ++i) {
      T* row = dtable + (size_t)tokens[i] * C;
      const T* g = dout + (size_t)i * C;
      for (int c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int, int);
template void embedding_forward<double>(double*, const int32_t*, const double*, int, int);
template void embedding_backward<float>(float*, const float*, const int32_t*, int, int);
template void embedding_backward<double>(double*, const double*, const int32_t*, int, int);

}  // namespace stapo
