// Rotary position embedding (HF rotate-half), the GPU twin of model/ops/rope.h.
// For each head, channel i pairs with i + D/2 (i < D/2), angle a = positions[n] · inv_freq[i] (fp32, as HF):
//   forward:  x[i] ← x[i]·cos a − x[i+D/2]·sin a,   x[i+D/2] ← x[i+D/2]·cos a + x[i]·sin a
//   backward: the same rotation by −a applied to the gradient (a rotation's transpose is its inverse).
// Layouts: x, dx (N, nh, D) bf16, rotated in place (the *_rows forms: out of place, token n's nh·D values at
// in + n·in_stride → out + n·out_stride, strides multiples of 8: the fused q‖k‖v projection's output rotated into
// the attention's buffers and back, train/cuda_model.h); positions (N) int32; inv_freq (D/2) fp32 on the device,
// computed on the host by the CPU twin's rope_inv_freq (llama3 scaling lives there, once).
// One thread per 8 channel pairs; D must be a multiple of 16.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace stapo {

void rope_forward(__nv_bfloat16* x, const int32_t* positions, const float* inv_freq, int N, int nh, int D,
                  cudaStream_t stream);
void rope_backward(__nv_bfloat16* dx, const int32_t* positions, const float* inv_freq, int N, int nh, int D,
                   cudaStream_t stream);
void rope_forward_rows(__nv_bfloat16* out, size_t out_stride, const __nv_bfloat16* in, size_t in_stride,
                       const int32_t* positions, const float* inv_freq, int N, int nh, int D, cudaStream_t stream);
void rope_backward_rows(__nv_bfloat16* out, size_t out_stride, const __nv_bfloat16* in, size_t in_stride,
                        const int32_t* positions, const float* inv_freq, int N, int nh, int D, cudaStream_t stream);

}  // namespace stapo
