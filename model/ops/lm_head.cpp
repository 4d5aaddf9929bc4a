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

// For each chunk of positions with a target: gathers their hidden rows into hc (n, C), computes their logits
// (n, V) and calls body(chunk_rows, n, hc, logits).
template <typename T, typename Body>
static void for_each_chunk(const T* h, const T* w, const int32_t* targets, int N, int C, int V, Body body) {
  std::vector<int> rows = rows_with_target(targets, N);
  const int chunk = lm_head_chunk_rows(V);
  std::vector<T> hc((size_t)chunk * C), logits((size_t)chunk * V);
  for (size_t r0 = 0; r0 < rows.size(); r0 += chunk) {
    const int n = (int)std::min<size_t>(chunk, rows.size() - r0);
    for (int r = 0; r < n; ++r) std::memcpy(hc.data() + (size_t)r * C, h + (size_t)rows[r0 + r] * C, sizeof(T) * C);
    matmul_cpu(logits.data(), hc.data(), w, n, V, C, false, true, 0.0f);
    body(rows.data() + r0, n, hc.data(), logits.data());
  }
}

// Replaces a row of logits by exp(x − max) and returns max, Σ exp(x − max) and Σ exp(x − max)·(x − max):
// one exp per logit (they dominate the op's non-matmul time), sums in double.
struct RowStats {
  double max, sum, weighted;
};
template <typename T>
static RowStats row_exp(T* x, int V) {
  const T m = *std::max_element(x, x + V);
  double sum = 0, weighted = 0;
  for (int v = 0; v < V; ++v) {
    const T shifted = x[v] - m;
    x[v] = std::exp(shifted);
    sum += x[v];
    weighted += (double)x[v] * shifted;
  }
  return {(double)m, sum, weighted};
}

template <typename T>
void lm_head_forward(T* logp, T* entropy, const T* h, const T* w, const int32_t* targets, int N, int C, int V) {
  std::fill(logp, logp + N, (T)0);
  std::fill(entropy, entropy + N, (T)0);
  for_each_chunk(h, w, targets, N, C, V, [&](const int* rows, int n, const T*, T* logits) {
#pragma omp parallel for
    for (int r = 0; r < n; ++r) {
      T* x = logits + (size_t)r * V;
      const int i = rows[r];
      const T target_logit = x[targets[i]];
      const RowStats st = row_exp(x, V);
      const double log_sum = std::log(st.sum);
      // logp = x_t − max − log Σ; entropy = log Σ − Σ p·(x − max), shifted by max so large logits do not cancel.
      logp[i] = (T)((double)target_logit - st.max - log_sum);
      entropy[i] = (T)(log_sum - st.weighted / st.sum);
    }
  });
}

template <typename T>
void lm_head_backward(T* dh, T* dw, const T* dlogp, const T* h, const T* w, const int32_t* targets, int N, int C,
                      int V) {
  std::fill(dh, dh + (size_t)N * C, (T)0);
  std::vector<T> dhc;
  for_each_chunk(h, w, targets, N, C, V, [&](const int* rows, int n, const T* hc, T* logits) {
    // logits → d logits in place: dlogp·(onehot − p).
#pragma omp parallel for
    for (int r = 0; r < n; ++r) {
      T* x = logits + (size_t)r * V;
      const int i = rows[r];
      const RowStats st = row_exp(x, V);
      const T scale = (T)(-dlogp[i] / st.sum);  // x now holds exp(x − max); p = that / Σ
      for (int v = 0; v < V; ++v) x[v] *= scale;
      x[targets[i]] += dlogp[i];
    }
    dhc.resize((size_t)n * C);
    matmul_cpu(dhc.data(), logits, w, n, C, V, false, false, 0.0f);
    matmul_cpu(dw, logits, hc, V, C, n, true, false, 1.0f);
    for (int r = 0; r < n; ++r) std::memcpy(dh + (size_t)rows[r] * C, dhc.data() + (size_t)r * C, sizeof(T) * C);
  });
}

template void lm_head_forward<float>(float*, float*, const float*, const float*, const int32_t*, int, int, int);
template void lm_head_forward<double>(double*, double*, const double*, const double*, const int32_t*, int, int,
                                      int);
template void lm_head_backward<float>(float*, float*, const float*, const float*, const float*, const int32_t*, int,
                                      int, int);
template void lm_head_backward<double>(double*, double*, const double*, const double*, const double*,
                                       const int32_t*, int, int, int);

}  // namespace stapo
