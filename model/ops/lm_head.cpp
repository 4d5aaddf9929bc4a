// lm_head + log-prob + entropy, chunked over the tokens that have a target (see lm_head.h). Each chunk's
// logits (rows, V) live only in a scratch buffer; backward recomputes them rather than keeping (N, V).
#include "model/ops/lm_head.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "model/ops/matmul.h"

namespace stapo {

// Rows per chunk: enough for an efficient matmul, few enough that the (rows, V) scratch stays ~64 MB in fp32.
static int lm_head_chunk_rows(int V) { return std::max(1, std::min(256, (16 << 20) / V)); }

// Positions with a target, in order.
static std::vector<int> rows_with_target(const int32_t* targets, int N) {
  std::vector<int> rows;
  for (int i = 0; i < N; ++i)
    if (targets[i] >= 0) rows.push_back(i);
  return rows;
}

// Gathers the chunk's hidden rows and computes its logits (n, V) into `logits`.
template <typename T>
static void chunk_logits(T* logits, T* hc, const T* h, const T* w, const int* rows, int n, int C, int V) {
  for (int r = 0; r < n; ++r) std::memcpy(hc + (size_t)r * C, h + (size_t)rows[r] * C, sizeof(T) * C);
  matmul_cpu(logits, hc, w, n, V, C, false, true, 0.0f);
}

// Log-sum-exp of one row, accumulated in double.
template <typename T>
static double row_lse(const T* x, int V) {
  T m = *std::max_element(x, x + V);
  double s = 0;
  for (int v = 0; v < V; ++v) s += std::exp((double)(x[v] - m));
  return (double)m + std::log(s);
}

template <typename T>
void lm_head_forward(T* logp, T* entropy, const T* h, const T* w, const int32_t* targets, int N, int C, int V) {
  std::fill(logp, logp + N, (T)0);
  std::fill(entropy, entropy + N, (T)0);
  std::vector<int> rows = rows_with_target(targets, N);
  const int chunk = lm_head_chunk_rows(V);
  std::vector<T> hc((size_t)chunk * C), logits((size_t)chunk * V);
  for (size_t r0 = 0; r0 < rows.size(); r0 += chunk) {
    int n = (int)std::min<size_t>(chunk, rows.size() - r0);
    chunk_logits(logits.data(), hc.data(), h, w, rows.data() + r0, n, C, V);
#pragma omp parallel for
    for (int r = 0; r < n; ++r) {
      const T* x = logits.data() + (size_t)r * V;
      double lse = row_lse(x, V);
      double p_dot_x = 0;
      for (int v = 0; v < V; ++v) p_dot_x += std::exp((double)x[v] - lse) * x[v];
      int i = rows[r0 + r];
      logp[i] = (T)((double)x[targets[i]] - lse);
      entropy[i] = (T)(lse - p_dot_x);
    }
  }
}

template <typename T>
void lm_head_backward(T* dh, T* dw, const T* dlogp, const T* h, const T* w, const int32_t* targets, int N, int C,
                      int V) {
  std::fill(dh, dh + (size_t)N * C, (T)0);
  std::vector<int> rows = rows_with_target(targets, N);
  const int chunk = lm_head_chunk_rows(V);
  std::vector<T> hc((size_t)chunk * C), dhc((size_t)chunk * C), logits((size_t)chunk * V);
  for (size_t r0 = 0; r0 < rows.size(); r0 += chunk) {
    int n = (int)std::min<size_t>(chunk, rows.size() - r0);
    chunk_logits(logits.data(), hc.data(), h, w, rows.data() + r0, n, C, V);
    // logits → d logits in place: dlogp·(onehot − p).
#pragma omp parallel for
    for (int r = 0; r < n; ++r) {
      T* x = logits.data() + (size_t)r * V;
      int i = rows[r0 + r];
      double lse = row_lse(x, V);
      T g = dlogp[i];
      for (int v = 0; v < V; ++v) x[v] = -g * (T)std::exp((double)x[v] - lse);
      x[targets[i]] += g;
    }
    matmul_cpu(dhc.data(), logits.data(), w, n, C, V, false, false, 0.0f);
    matmul_cpu(dw, logits.data(), hc.data(), V, C, n, true, false, 1.0f);
    for (int r = 0; r < n; ++r)
      std::memcpy(dh + (size_t)rows[r0 + r] * C, dhc.data() + (size_t)r * C, sizeof(T) * C);
  }
}

template void lm_head_forward<float>(float*, float*, const float*, const float*, const int32_t*, int, int, int);
template void lm_head_forward<double>(double*, double*, const double*, const double*, const int32_t*, int, int,
                                      int);
template void lm_head_backward<float>(float*, float*, const float*, const float*, const float*, const int32_t*, int,
                                      int, int);
template void lm_head_backward<double>(double*, double*, const double*, const double*, const double*,
                                       const int32_t*, int, int, int);

}  // namespace stapo
