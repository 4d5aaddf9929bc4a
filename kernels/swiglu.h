// SwiGLU, the gated activation of the Llama MLP; GPU twin of model/ops/swiglu.h.
//   forward:  out = silu(gate) · up,  silu(g) = g·σ(g)
//   backward: dgate = dout · up · σ(g)·(1 + g·(1 − σ(g))),  dup = dout · silu(g)     (both =, activation grads)
// Layouts: out, dout (N, F) bf16, contiguous; gate, up, dgate, dup (N, F) bf16 with rows `stride` elements apart
// (F: contiguous; 2F with up = gate + F: the fused gate‖up projection's output, train/cuda_model.h). Elementwise, 8 elements (128 bits) per
// thread: F must be a multiple of 8. fp32 math, one rounding per output.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace stapo {

void swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* gate, const __nv_bfloat16* up, int N, int F, int stride,
                    cudaStream_t stream);
void swiglu_backward(__nv_bfloat16* dgate, __nv_bfloat16* dup, const __nv_bfloat16* dout, const __nv_bfloat16* gate,
                     const __nv_bfloat16* up, int N, int F, int stride, cudaStream_t stream);

}  // namespace stapo
