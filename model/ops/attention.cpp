// Causal GQA attention with packed rows and a sliding window, one query at a time (see attention.h).
// Forward keeps only lse; backward recomputes p = exp(score − lse) and uses, per query,
//   dp_j = dout·v_j,  ds_j = p_j·(dp_j − dout·out),  dq = Σ ds_j·k_j/√D,  dk_j += ds_j·q/√D,  dv_j += p_j·dout.
#include "model/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace stapo {

// First key position query i (row-local) may see; keys before it are outside the sliding window.
static int first_key(int i, int window) { return window > 0 ? std::max(0, i - window + 1) : 0; }

template <typename T>
static T dot(const T* a, const T* b, int D) {
  T s = 0;
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& shape,
                       const int32_t* segments) {
  const int Tn = shape.T, H = shape.H, Hkv = shape.Hkv, D = shape.D, group = H / Hkv;
  const T scale = (T)(1.0 / std::sqrt((double)D));
#pragma omp parallel
  {
    std::vector<T> score(Tn);
#pragma omp for collapse(3) schedule(dynamic, 8)
    for (int b = 0; b < shape.rows; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < Tn; ++i) {
          size_t qi = (size_t)b * Tn + i;
          const int32_t* seg = segments + (size_t)b * Tn;
          T* o = out + (qi * H + h) * D;
          std::fill(o, o + D, (T)0);
          lse[qi * H + h] = -std::numeric_limits<T>::infinity();
          if (seg[i] < 0) continue;  // padding sees nothing
          const T* qv = q + (qi * H + h) * D;
          const int hk = h / group, j0 = first_key(i, shape.window);
          T max_score = -std::numeric_limits<T>::infinity();
          for (int j = j0; j <= i; ++j) {
            if (seg[j] != seg[i]) continue;
            score[j] = dot(qv, k + (((size_t)b * Tn + j) * Hkv + hk) * D, D) * scale;
            max_score = std::max(max_score, score[j]);
          }
          T sum = 0;
          for (int j = j0; j <= i; ++j) {
            if (seg[j] != seg[i]) continue;
            score[j] = std::exp(score[j] - max_score);
            sum += score[j];
          }
          for (int j = j0; j <= i; ++j) {
            if (seg[j] != seg[i]) continue;
            const T p = score[j] / sum;
            const T* vv = v + (((size_t)b * Tn + j) * Hkv + hk) * D;
            for (int d = 0; d < D; ++d) o[d] += p * vv[d];
          }
          lse[qi * H + h] = max_score + std::log(sum);
        }
  }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q, const T* k,
                        const T* v, const AttentionShape& shape, const int32_t* segments) {
  const int Tn = shape.T, H = shape.H, Hkv = shape.Hkv, D = shape.D, group = H / Hkv;
  const T scale = (T)(1.0 / std::sqrt((double)D));
  // One (row, kv head) per task: it alone writes that slice of dk/dv and the dq of its query heads.
#pragma omp parallel
  {
    std::vector<T> ds(Tn);
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < shape.rows; ++b)
      for (int hk = 0; hk < Hkv; ++hk) {
        const int32_t* seg = segments + (size_t)b * Tn;
        for (int j = 0; j < Tn; ++j) {
          size_t kj = (((size_t)b * Tn + j) * Hkv + hk) * D;
          std::fill(dk + kj, dk + kj + D, (T)0);
          std::fill(dv + kj, dv + kj + D, (T)0);
        }
        for (int h = hk * group; h < (hk + 1) * group; ++h)
          for (int i = 0; i < Tn; ++i) {
            size_t qi = (size_t)b * Tn + i;
            T* dqv = dq + (qi * H + h) * D;
            std::fill(dqv, dqv + D, (T)0);
            if (seg[i] < 0) continue;
            const T* qv = q + (qi * H + h) * D;
            const T* g = dout + (qi * H + h) * D;
            const T g_dot_out = dot(g, out + (qi * H + h) * D, D);
            const T l = lse[qi * H + h];
            const int j0 = first_key(i, shape.window);
            for (int j = j0; j <= i; ++j) {
              if (seg[j] != seg[i]) continue;
              size_t kj = (((size_t)b * Tn + j) * Hkv + hk) * D;
              const T p = std::exp(dot(qv, k + kj, D) * scale - l);
              const T dp = dot(g, v + kj, D);
              ds[j] = p * (dp - g_dot_out) * scale;
              for (int d = 0; d < D; ++d) dv[kj + d] += p * g[d];
            }
            for (int j = j0; j <= i; ++j) {
              if (seg[j] != seg[i]) continue;
              size_t kj = (((size_t)b * Tn + j) * Hkv + hk) * D;
              for (int d = 0; d < D; ++d) {
                dqv[d] += ds[j] * k[kj + d];
                dk[kj + d] += ds[j] * qv[d];
              }
            }
          }
      }
  }
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       const AttentionShape&, const int32_t*);
template void attention_forward<double>(double*, double*, const double*, const double*, const double*,
                                        const AttentionShape&, const int32_t*);
template void attention_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*, const AttentionShape&,
                                        const int32_t*);
template void attention_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, const double*, const AttentionShape&,
                                         const int32_t*);

}  // namespace stapo
