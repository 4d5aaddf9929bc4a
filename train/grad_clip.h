// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: the norm of all gradients together,
// and the factor min(1, max_norm / (norm + 1e-6)) the optimizer applies to every gradient (max_norm ≤ 0:
// no clipping, factor 1). The norm is accumulated in double in a fixed order (reproducible runs).
#pragma once
#include <cmath>
#include <cstddef>

namespace stapo {

template <typename T>
double grad_sum_squares(const T* grad, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += double(grad[i]) * double(grad[i]);
  return sum;
}

inline double grad_clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0 || !std::isfinite(norm)) return 1.0;
  const double factor = max_norm / (norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

}  // namespace stapo
