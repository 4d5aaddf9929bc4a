// AdamW updates (train/adamw.h), per element model/ops/adamw.h's functions: adamw_update in double, then rounded
// to T; adamw_compact_update in float, as the kernel. Neither result depends on OpenMP's split, so runs are
// bitwise reproducible at any thread count.
#include "train/adamw.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace stapo {

template <typename T>
void adamw_update(T* p, const T* grad, T* m, T* v, size_t n, double lr, double weight_decay,
                  const AdamWConfig& config, int64_t t, double grad_scale) {
  const AdamWStep<double> step =
      adamw_step_make<double>(lr, weight_decay, config.beta1, config.beta2, config.eps, t);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    double mi = m[i], vi = v[i];
    adamw_moments(grad_scale * double(grad[i]), mi, vi, step);
    m[i] = T(mi);
    v[i] = T(vi);
    p[i] = T(adamw_apply(double(p[i]), double(m[i]), double(v[i]), step));  // the moments as stored
  }
}

template void adamw_update<float>(float*, const float*, float*, float*, size_t, double, double, const AdamWConfig&,
                                  int64_t, double);
template void adamw_update<double>(double*, const double*, double*, double*, size_t, double, double,
                                   const AdamWConfig&, int64_t, double);

namespace {

template <MasterKind K, MomentKind Q>
void compact_update(const AdamWState& s, const float* grads, const AdamWStep<float>& step, float clip, uint32_t seed) {
  static const QuantMap m_map = quant_map(true), v_map = quant_map(false);
  const int64_t blocks = int64_t(quant_blocks(s.n));
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) {
    const size_t begin = size_t(b) * kQuantBlock, end = std::min(s.n, begin + kQuantBlock);
    float m_new[kQuantBlock], v_new[kQuantBlock];
    float m_old_absmax = 0, v_old_absmax = 0, m_absmax = 0, v_absmax = 0;
    if (Q == MomentKind::q8) {
      m_old_absmax = s.m_absmax[b];
      v_old_absmax = s.v_absmax[b];
    }
    for (size_t i = begin; i < end; i++) {
      float& m = m_new[i - begin];
      float& v = v_new[i - begin];
      const AdamWInputs in = adamw_read<K, Q>(s, i, m_map.value, v_map.value, m_old_absmax, v_old_absmax);
      adamw_write<K, Q>(s, i, grads[i] * clip, in, step, seed, m, v);
      m_absmax = fmaxf(m_absmax, fabsf(m));
      v_absmax = fmaxf(v_absmax, v);
    }
    if (Q == MomentKind::fp32) continue;
    s.m_absmax[b] = m_absmax;
    s.v_absmax[b] = v_absmax;
    for (size_t i = begin; i < end; i++)
      adamw_encode(s, i, m_new[i - begin], v_new[i - begin], m_map.bound, v_map.bound, m_absmax, v_absmax);
  }
}

template <MasterKind K>
void compact_update(const AdamWState& s, MomentKind moments, const float* grads, const AdamWStep<float>& step,
                    float clip, uint32_t seed) {
  if (moments == MomentKind::q8)
    compact_update<K, MomentKind::q8>(s, grads, step, clip, seed);
  else
    compact_update<K, MomentKind::fp32>(s, grads, step, clip, seed);
}

}  // namespace

void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const float* grads,
                          const AdamWStep<float>& step, float clip, uint32_t seed) {
  adamw_state_check(state, master, moments, step, false, "adamw_compact_update (CPU)");
  switch (master) {
    case MasterKind::fp32: return compact_update<MasterKind::fp32>(state, moments, grads, step, clip, seed);
    case MasterKind::split: return compact_update<MasterKind::split>(state, moments, grads, step, clip, seed);
    case MasterKind::none: return compact_update<MasterKind::none>(state, moments, grads, step, clip, seed);
  }
}

bool keeps_fp32_moments(const ParamSpec& spec) { return spec.role == ParamRole::embed; }

Q8MomentLayout q8_moment_layout(const std::vector<ParamSpec>& specs, size_t align) {
  STAPO_CHECK(align >= 1, "q8_moment_layout: align ", align);
  Q8MomentLayout out;
  for (const ParamSpec& s : specs) {
    const bool fp32 = keeps_fp32_moments(s);
    size_t& end = fp32 ? out.fp32_elements : out.code_elements;
    out.kind.push_back(fp32 ? MomentKind::fp32 : MomentKind::q8);
    out.offset.push_back(end);
    out.block.push_back(fp32 ? 0 : out.blocks);
    end += (s.numel + align - 1) / align * align;
    if (!fp32) out.blocks += quant_blocks(s.numel);
  }
  return out;
}

}  // namespace stapo
