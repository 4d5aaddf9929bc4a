// SwiGLU forward/backward (see swiglu.h). With s = sigmoid(g):
//   d gate = dout · up · s · (1 + g·(1 − s)),   d up = dout · g · s.
#include "model/ops/swiglu.h"

#include <cmath>
#include <cstddef>

namespace stapo {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int N, int F) {
  size_t n = (size_t)N * F;
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    T g = gate[i];
    out[i] = g / (1 + std::exp(-g)) * up[i];
  }
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int N, int F) {
  size_t n = (size_t)N * F;
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    T g = gate[i];
    T s = 1 / (1 + std::exp(-g));
    dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dout[i] * g * s;
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, int, int);
template void swiglu_forward<double>(double*, const double*, const double*, int, int);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int, int);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int, int);

}  // namespace stapo
