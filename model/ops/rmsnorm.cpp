// RMSNorm forward/backward (see rmsnorm.h). With n = x·rstd, out = w·n:
//   dx = rstd · (w·dout − n · mean(w·dout·n)),   dw = Σ_rows dout·n.
// Sums accumulate in double for both T so fp32 matches torch's fp32 mean to rounding.
#include "model/ops/rmsnorm.h"

#include <cmath>
#include <cstddef>
#include <vector>

namespace stapo {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const T* x = inp + (size_t)i * C;
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += (double)x[c] * x[c];
    T r = (T)(1.0 / std::sqrt(ss / C + (double)eps));
    rstd[i] = r;
    T* o = out + (size_t)i * C;
    for (int c = 0; c < C; ++c) o[c] = weight[c] * (x[c] * r);
  }
}

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight, const T* rstd, int N,
                      int C) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const T* x = inp + (size_t)i * C;
    const T* g = dout + (size_t)i * C;
    T r = rstd[i];
    double dot = 0;  // Σ_c w·dout·n
    for (int c = 0; c < C; ++c) dot += (double)weight[c] * g[c] * (x[c] * r);
    T mean = (T)(dot / C);
    T* dx = dinp + (size_t)i * C;
    for (int c = 0; c < C; ++c) dx[c] += r * (weight[c] * g[c] - x[c] * r * mean);
  }
  // dweight: columns split across threads, rows summed in order (deterministic).
  const int block = 64;
#pragma omp parallel for
  for (int c0 = 0; c0 < C; c0 += block) {
    int c1 = c0 + block < C ? c0 + block : C;
    std::vector<double> acc(c1 - c0, 0.0);
    for (int i = 0; i < N; ++i) {
      const T* x = inp + (size_t)i * C;
      const T* g = dout + (size_t)i * C;
      for (int c = c0; c < c1; ++c) acc[c - c0] += (double)g[c] * (x[c] * rstd[i]);
    }
    for (int c = c0; c < c1; ++c) dweight[c] += (T)acc[c - c0];
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int, float);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int,
                                      int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*,
                                       const double*, int, int);

}  // namespace stapo
