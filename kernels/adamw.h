// AdamW (decoupled weight decay, torch.optim.AdamW's update), elementwise over one parameter tensor.
//   g = grad · clip_scale;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   p = p·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
// Two storage modes:
//   master != nullptr: fp32 master weights are updated, params receive their round-to-nearest bf16 copy;
//   master == nullptr: bf16 params only (half the memory), the fp32 update is stochastically rounded back to bf16
//     (unbiased, so small updates are not lost to rounding; as llm.c), from a hash of (seed, index_base + index):
//     a data-parallel rank updating part of a tensor passes that part's first index in the tensor, so the bits
//     do not depend on how the tensor was split (train/cuda_zero.h).
// Layouts: params (n) bf16; grads, master, m, v (n) fp32; clip_scale one device float (grad_norm_finish), or
// nullptr for 1; apply one device int (grad_norm_finish): 0 leaves params, master, m and v untouched (a step whose
// norm or loss was not finite), nullptr always updates. step t starts at 1. In place, one thread per element.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace stapo {

struct AdamWHyper {
  float lr = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

void adamw_update(__nv_bfloat16* params, float* master, const float* grads, float* m, float* v, size_t n,
                  const AdamWHyper& hyper, int step, const float* clip_scale, const int* apply, uint32_t seed,
                  cudaStream_t stream, size_t index_base = 0);

}  // namespace stapo
