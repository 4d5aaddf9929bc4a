// Global gradient norm and the clip factor, without leaving the device (no host sync per step).
//   norm = sqrt(Σ over every gradient tensor Σ_i g_i²),   clip_scale = min(1, max_norm / (norm + 1e-6))
// (torch.nn.utils.clip_grad_norm_'s rule; max_norm ≤ 0 disables clipping: clip_scale = 1). The scale is not
// applied here: adamw_update reads it, so the gradients are read once more at most.
// Usage: grad_norm_accumulate over each gradient tensor (accumulate = false for the first), then
// grad_norm_finish. partials holds GRAD_NORM_BLOCKS floats; the sum order is fixed, so the norm is deterministic.
// Gradients are bf16, squares accumulate in fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace stapo {

constexpr int GRAD_NORM_BLOCKS = 264;

void grad_norm_accumulate(float* partials, const __nv_bfloat16* grads, size_t n, bool accumulate,
                          cudaStream_t stream);
// norm (1) and clip_scale (1) are device floats.
void grad_norm_finish(float* norm, float* clip_scale, const float* partials, float max_norm, cudaStream_t stream);

}  // namespace stapo
