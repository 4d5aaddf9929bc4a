// Global gradient norm, the clip factor and the decision whether to update, without leaving the device (the host
// never waits for the norm: it reads it with the step's results, after the update is queued).
//   norm = sqrt(Σ over every gradient tensor Σ_i g_i²),   clip_scale = min(1, max_norm / (norm + 1e-6))
// (torch.nn.utils.clip_grad_norm_'s rule, train/grad_clip.h's grad_clip_factor; max_norm ≤ 0 or a norm that is not
// finite: clip_scale = 1). apply = 1 when the norm is finite and no loss of the step was (*nonfinite_loss == 0,
// set by kernels/preference_loss.h's pair_loss), else 0: adamw_compact_update reads it and leaves everything
// untouched. The scale is not applied here: adamw_compact_update reads it, so the gradients are read once more at
// most.
// Usage: grad_norm_accumulate over each gradient tensor (accumulate = false for the first), then
// grad_norm_finish. partials holds GRAD_NORM_BLOCKS floats; the sum order is fixed, so the norm is deterministic.
// Gradients are fp32 (accumulated over the step's micro-batches) or, for part of them, bf16; squares accumulate
// in fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace stapo {

constexpr int GRAD_NORM_BLOCKS = 264;

// grads (n) fp32, 16-byte aligned.
void grad_norm_accumulate(float* partials, const float* grads, size_t n, bool accumulate, cudaStream_t stream);
// grads (n) bf16 (the layers' matmul-weight gradients under --grads bf16); the same partials.
void grad_norm_accumulate(float* partials, const __nv_bfloat16* grads, size_t n, bool accumulate,
                          cudaStream_t stream);
// norm, clip_scale (1 each) fp32 and apply (1) int32, on the device; nonfinite_loss (1) int32 or nullptr (none).
void grad_norm_finish(float* norm, float* clip_scale, int* apply, const float* partials, float max_norm,
                      const int* nonfinite_loss, cudaStream_t stream);

}  // namespace stapo
