// RMSNorm as HF's LlamaRMSNorm: out = weight · x · rstd,  rstd = 1/sqrt(mean(x²) + eps).
//   inp, out, dout, dinp (N, C); weight, dweight (C); rstd (N), saved by the forward for the backward.
// Backward: dinp += (the residual stream's gradient: the norm's input is the residual, whose gradient
// already holds the skip path), dweight += (a parameter gradient).
#pragma once

namespace stapo {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps);

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight, const T* rstd, int N,
                      int C);

}  // namespace stapo
