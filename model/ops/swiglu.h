// SwiGLU, the gated activation of the Llama MLP: out = silu(gate) · up, silu(g) = g · sigmoid(g).
//   gate, up, out, dout, dgate, dup (N, F). Backward writes (=) dgate and dup: they are activation gradients.
#pragma once

namespace stapo {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, int N, int F);

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int N, int F);

}  // namespace stapo
