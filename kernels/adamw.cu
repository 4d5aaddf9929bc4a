// AdamW update with fp32 master weights or stochastically rounded bf16 params (math in adamw.h).
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "model/ops/adamw.h"  // defines: hash_index, bf16_round_stochastic

namespace stapo {

// ---- kernels ----

__global__ void adamw_kernel(bf16* params, float* master, const float* grads, float* m, float* v, size_t n,
                             AdamWHyper hyper, float bias_correction1, float bias_correction2,
                             const float* clip_scale, const int* apply, uint32_t seed) {
  const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n || (apply && *apply == 0)) return;
  const float g = grads[i] * (clip_scale ? *clip_scale : 1.0f);
  const float m_new = hyper.beta1 * m[i] + (1.0f - hyper.beta1) * g;
  const float v_new = hyper.beta2 * v[i] + (1.0f - hyper.beta2) * g * g;
  m[i] = m_new;
  v[i] = v_new;
  float p = master ? master[i] : __bfloat162float(params[i]);
  p *= 1.0f - hyper.lr * hyper.weight_decay;
  p -= hyper.lr * (m_new / bias_correction1) / (sqrtf(v_new / bias_correction2) + hyper.eps);
  if (master) {
    master[i] = p;
    params[i] = __float2bfloat16_rn(p);
  } else {
    params[i] = __ushort_as_bfloat16(bf16_round_stochastic(p, hash_index(seed, (uint32_t)i)));
  }
}

// ---- launcher ----

void adamw_update(bf16* params, float* master, const float* grads, float* m, float* v, size_t n,
                  const AdamWHyper& hyper, int step, const float* clip_scale, const int* apply, uint32_t seed,
                  cudaStream_t stream) {
  STAPO_CHECK(step >= 1, "adamw_update: step = ", step, " must start at 1 (bias correction divides by 1 − β^t)");
  STAPO_CHECK(hyper.beta1 >= 0 && hyper.beta1 < 1 && hyper.beta2 >= 0 && hyper.beta2 < 1,
              "adamw_update: betas (", hyper.beta1, ", ", hyper.beta2, ") must lie in [0, 1)");
  if (n == 0) return;
  const float bias_correction1 = 1.0f - (float)std::pow((double)hyper.beta1, step);
  const float bias_correction2 = 1.0f - (float)std::pow((double)hyper.beta2, step);
  const int block = 256;
  adamw_kernel<<<(unsigned)((n + block - 1) / block), block, 0, stream>>>(
      params, master, grads, m, v, n, hyper, bias_correction1, bias_correction2, clip_scale, apply, seed);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
