// Causal GQA attention with packed rows and a sliding window (see attention.h), in blocks of queries:
// for the Bq queries i0..i1 of one (row, head), the keys they may need are j0..i1 (j0 = the first key the
// window lets query i0 see), so S = q·kᵀ/√D is one small (Bq, nk) product, masked and softmaxed in place,
// and out = P·v another. Products run single-threaded inside the parallel loop (matmul_cpu_strided).
// Backward recomputes P from lse and, per block, with delta_i = dout_i·out_i:
//   dP = dout·vᵀ,  dS = P∘(dP − delta)/√D,  dq = dS·k,  dk += dSᵀ·q,  dv += Pᵀ·dout.
// It runs one (row, kv head) per task, so the dk/dv a task accumulates belong to it alone.
#include "model/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "model/ops/matmul.h"

namespace stapo {

static const int kQueryBlock = 64;

// First key position query i (row-local) may see; keys before it are outside the sliding window.
static int first_key(int i, int window) { return window > 0 ? std::max(0, i - window + 1) : 0; }

// Whether query i sees key j (both row-local, j within the block's key range) — TokenBatch's rule.
static bool visible(const int32_t* seg, int i, int j, int window) {
  return seg[i] >= 0 && seg[j] == seg[i] && j <= i && (window <= 0 || i - j < window);
}

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionShape& shape,
                       const int32_t* segments) {
  const int Tn = shape.T, H = shape.H, Hkv = shape.Hkv, D = shape.D, group = H / Hkv;
  const int blocks = (Tn + kQueryBlock - 1) / kQueryBlock;
  const float scale = (float)(1.0 / std::sqrt((double)D));
#pragma omp parallel
  {
    std::vector<T> S((size_t)kQueryBlock * Tn);
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < shape.rows; ++b)
      for (int h = 0; h < H; ++h)
        for (int blk = 0; blk < blocks; ++blk) {
          const int i0 = blk * kQueryBlock, i1 = std::min(Tn, i0 + kQueryBlock), nq = i1 - i0;
          const int j0 = first_key(i0, shape.window), nk = i1 - j0, hk = h / group;
          const int32_t* seg = segments + (size_t)b * Tn;
          const T* qb = q + (((size_t)b * Tn + i0) * H + h) * D;
          const T* kb = k + (((size_t)b * Tn + j0) * Hkv + hk) * D;
          const T* vb = v + (((size_t)b * Tn + j0) * Hkv + hk) * D;
          matmul_cpu_strided(S.data(), nk, qb, H * D, kb, Hkv * D, nq, nk, D, false, true, scale, 0.0f);
          for (int i = i0; i < i1; ++i) {
            T* row = S.data() + (size_t)(i - i0) * nk;
            T max_score = -std::numeric_limits<T>::infinity();
            for (int j = j0; j < i1; ++j)
              if (visible(seg, i, j, shape.window)) max_score = std::max(max_score, row[j - j0]);
            T sum = 0;
            for (int j = j0; j < i1; ++j) {
              row[j - j0] = visible(seg, i, j, shape.window) ? std::exp(row[j - j0] - max_score) : (T)0;
              sum += row[j - j0];
            }
            // A query that sees nothing (padding) keeps an all-zero row: out = 0, lse = −inf.
            const T inv = sum > 0 ? 1 / sum : (T)0;
            for (int j = 0; j < nk; ++j) row[j] *= inv;
            lse[((size_t)b * Tn + i) * H + h] = sum > 0 ? max_score + std::log(sum) : max_score;
          }
          matmul_cpu_strided(out + (((size_t)b * Tn + i0) * H + h) * D, H * D, S.data(), nk, vb, Hkv * D, nq, D, nk,
                             false, false, 1.0f, 0.0f);
        }
  }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q, const T* k,
                        const T* v, const AttentionShape& shape, const int32_t* segments) {
  const int Tn = shape.T, H = shape.H, Hkv = shape.Hkv, D = shape.D, group = H / Hkv;
  const int blocks = (Tn + kQueryBlock - 1) / kQueryBlock;
  const float scale = (float)(1.0 / std::sqrt((double)D));
#pragma omp parallel
  {
    std::vector<T> P((size_t)kQueryBlock * Tn), dS((size_t)kQueryBlock * Tn);
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
          for (int blk = 0; blk < blocks; ++blk) {
            const int i0 = blk * kQueryBlock, i1 = std::min(Tn, i0 + kQueryBlock), nq = i1 - i0;
            const int j0 = first_key(i0, shape.window), nk = i1 - j0;
            const size_t qoff = (((size_t)b * Tn + i0) * H + h) * D, koff = (((size_t)b * Tn + j0) * Hkv + hk) * D;
            matmul_cpu_strided(P.data(), nk, q + qoff, H * D, k + koff, Hkv * D, nq, nk, D, false, true, scale, 0.0f);
            matmul_cpu_strided(dS.data(), nk, dout + qoff, H * D, v + koff, Hkv * D, nq, nk, D, false, true, 1.0f,
                               0.0f);
            for (int i = i0; i < i1; ++i) {
              T* p = P.data() + (size_t)(i - i0) * nk;
              T* ds = dS.data() + (size_t)(i - i0) * nk;
              const T* g = dout + qoff + (size_t)(i - i0) * H * D;
              const T* o = out + qoff + (size_t)(i - i0) * H * D;
              T delta = 0;
              for (int d = 0; d < D; ++d) delta += g[d] * o[d];
              const T l = lse[((size_t)b * Tn + i) * H + h];
              for (int j = j0; j < i1; ++j) {
                p[j - j0] = visible(seg, i, j, shape.window) ? std::exp(p[j - j0] - l) : (T)0;
                ds[j - j0] = p[j - j0] * (ds[j - j0] - delta) * (T)scale;
              }
            }
            matmul_cpu_strided(dq + qoff, H * D, dS.data(), nk, k + koff, Hkv * D, nq, D, nk, false, false, 1.0f,
                               0.0f);
            matmul_cpu_strided(dk + koff, Hkv * D, dS.data(), nk, q + qoff, H * D, nk, D, nq, true, false, 1.0f,
                               1.0f);
            matmul_cpu_strided(dv + koff, Hkv * D, P.data(), nk, dout + qoff, H * D, nk, D, nq, true, false, 1.0f,
                               1.0f);
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
