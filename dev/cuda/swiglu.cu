// Playground: SwiGLU forward and backward (kernels/swiglu.cu).
// Build: make swiglu   Run: ./swiglu
// Versions: 1 = the mainline kernels (8 bf16 per thread, 128-bit loads). Timed at Llama 3 8B's FFN width.
#include "dev/cuda/common.h"
#include "kernels/swiglu.cu"
#include "model/ops/swiglu.h"

using namespace playground;

int main() {
  print_device();
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    const int N = bench ? 8192 : 129, F = bench ? 14336 : 2056;
    const size_t n = (size_t)N * F;
    auto gate = random_normal(n, 2.0f, 1), up = random_normal(n, 1.0f, 2), dout = random_normal(n, 1.0f, 3);
    bf16 *d_gate = to_device_bf16(gate), *d_up = to_device_bf16(up), *d_dout = to_device_bf16(dout);
    bf16 *d_out = device_alloc<bf16>(n), *d_dgate = device_alloc<bf16>(n), *d_dup = device_alloc<bf16>(n);
    auto forward = [&] { stapo::swiglu_forward(d_out, d_gate, d_up, N, F, F, 0); };
    auto backward = [&] { stapo::swiglu_backward(d_dgate, d_dup, d_dout, d_gate, d_up, N, F, F, 0); };
    if (!bench) {
      std::printf("validate N=%d F=%d\n", N, F);
      std::vector<float> out(n), dgate(n), dup(n);
      stapo::swiglu_forward(out.data(), gate.data(), up.data(), N, F);
      stapo::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), N, F);
      forward();
      backward();
      cudaCheck(cudaDeviceSynchronize());
      validate("out", from_device_bf16(d_out, n), out, 1e-2);
      validate("dgate", from_device_bf16(d_dgate, n), dgate, 1e-2);
      validate("dup", from_device_bf16(d_dup, n), dup, 1e-2);
    } else {
      const float fwd = time_ms(forward), bwd = time_ms(backward);
      std::printf("N=%d F=%d  forward %.3f ms (%.0f GB/s)  backward %.3f ms (%.0f GB/s)\n", N, F, fwd,
                  3.0 * n * 2 / fwd / 1e6, bwd, 5.0 * n * 2 / bwd / 1e6);
    }
    for (void* p : {(void*)d_gate, (void*)d_up, (void*)d_dout, (void*)d_out, (void*)d_dgate, (void*)d_dup})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
