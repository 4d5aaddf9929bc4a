// AdamW update (train/adamw.h). Per element the arithmetic is in double, then rounded to T: the
// result does not depend on OpenMP's split, so runs are bitwise reproducible at any thread count.
#include "train/adamw.h"

#include <cmath>

namespace stapo {

template <typename T>
void adamw_update(T* p, const T* grad, T* m, T* v, size_t n, double lr, double weight_decay,
                  const AdamWConfig& config, int64_t t, double grad_scale) {
  const double b1 = config.beta1, b2 = config.beta2;
  const double correction1 = 1.0 - std::pow(b1, double(t));
  const double correction2 = 1.0 - std::pow(b2, double(t));
  const double decay = 1.0 - lr * weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    const double g = grad_scale * double(grad[i]);
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = T(mi);
    v[i] = T(vi);
    const double update = (double(m[i]) / correction1) / (std::sqrt(double(v[i]) / correction2) + config.eps);
    p[i] = T(double(p[i]) * decay - lr * update);
  }
}

template void adamw_update<float>(float*, const float*, float*, float*, size_t, double, double, const AdamWConfig&,
                                  int64_t, double);
template void adamw_update<double>(double*, const double*, double*, double*, size_t, double, double,
                                   const AdamWConfig&, int64_t, double);

}  // namespace stapo
