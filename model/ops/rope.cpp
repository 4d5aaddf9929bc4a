// RoPE in HF's rotate-half convention with optional Llama 3 frequency scaling (see rope.h).
// The angle is position·inv_freq in T, as HF computes it in the activation dtype (fp32).
#include "model/ops/rope.h"

#include <cmath>
#include <cstddef>

namespace stapo {

template <typename T>
std::vector<T> rope_inv_freq(int D, double theta, const RopeScaling& scaling) {
  std::vector<T> inv_freq(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    double f = 1.0 / std::pow(theta, (2.0 * i) / D);
    if (scaling.llama3) {
      // Wavelengths longer than the original context are stretched by `factor`, shorter than
      // context/high_freq_factor kept, and the band between blended linearly in context/wavelength.
      double old_context = scaling.original_max_position_embeddings;
      double low_freq_wavelen = old_context / scaling.low_freq_factor;
      double high_freq_wavelen = old_context / scaling.high_freq_factor;
      double wavelen = 2 * M_PI / f;
      if (wavelen > low_freq_wavelen) {
        f = f / scaling.factor;
      } else if (!(wavelen < high_freq_wavelen)) {
        double smooth = (old_context / wavelen - scaling.low_freq_factor) /
                        (scaling.high_freq_factor - scaling.low_freq_factor);
        f = (1 - smooth) * f / scaling.factor + smooth * f;
      }
    }
    inv_freq[i] = (T)f;
  }
  return inv_freq;
}

// Rotates every head of every token by +angle (sign = 1) or −angle (sign = −1).
template <typename T>
static void rope_rotate(T* x, const int32_t* positions, const T* inv_freq, int N, int nh, int D, T sign) {
  int half = D / 2;
#pragma omp parallel
  {
    std::vector<T> cos_a(half), sin_a(half);
#pragma omp for
    for (int n = 0; n < N; ++n) {
      for (int i = 0; i < half; ++i) {
        T angle = (T)positions[n] * inv_freq[i];
        cos_a[i] = std::cos(angle);
        sin_a[i] = sign * std::sin(angle);
      }
      for (int h = 0; h < nh; ++h) {
        T* v = x + ((size_t)n * nh + h) * D;
        for (int i = 0; i < half; ++i) {
          T a = v[i], b = v[i + half];
          v[i] = a * cos_a[i] - b * sin_a[i];
          v[i + half] = b * cos_a[i] + a * sin_a[i];
        }
      }
    }
  }
}

template <typename T>
void rope_forward(T* x, const int32_t* positions, const T* inv_freq, int N, int nh, int D) {
  rope_rotate(x, positions, inv_freq, N, nh, D, (T)1);
}

template <typename T>
void rope_backward(T* dx, const int32_t* positions, const T* inv_freq, int N, int nh, int D) {
  rope_rotate(dx, positions, inv_freq, N, nh, D, (T)-1);
}

template std::vector<float> rope_inv_freq<float>(int, double, const RopeScaling&);
template std::vector<double> rope_inv_freq<double>(int, double, const RopeScaling&);
template void rope_forward<float>(float*, const int32_t*, const float*, int, int, int);
template void rope_forward<double>(double*, const int32_t*, const double*, int, int, int);
template void rope_backward<float>(float*, const int32_t*, const float*, int, int, int);
template void rope_backward<double>(double*, const int32_t*, const double*, int, int, int);

}  // namespace stapo
