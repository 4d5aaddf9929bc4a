// Playground: RMSNorm fused with the residual add (kernels/rmsnorm.cu), forward and backward.
// Build: make rmsnorm   Run: ./rmsnorm
// Versions: 1 = the mainline kernels (one block per row, slices of 8 channels in registers; deterministic
// dweight through per-block partial rows). Validated against the CPU twin, then timed at Llama 3 8B's width.
#include "dev/cuda/common.h"
#include "kernels/rmsnorm.cu"
#include "model/ops/rmsnorm.h"

using namespace playground;

int main() {
  print_device();
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    const int N = bench ? 8192 : 333, C = bench ? 4096 : 1032;
    const size_t n = (size_t)N * C;
    auto inp = random_normal(n, 1.0f, 1), weight = random_normal(C, 1.0f, 2), dout = random_normal(n, 1.0f, 3);
    bf16 *d_inp = to_device_bf16(inp), *d_weight = to_device_bf16(weight), *d_dout = to_device_bf16(dout);
    bf16 *d_out = device_alloc<bf16>(n), *d_dinp = device_alloc<bf16>(n);
    float* d_dweight = device_alloc<float>(C);  // fp32: a parameter gradient
    float *d_rstd = device_alloc<float>(N), *d_scratch = device_alloc<float>(stapo::rmsnorm_backward_scratch_floats(C));
    cudaCheck(cudaMemset(d_dinp, 0, n * sizeof(bf16)));
    cudaCheck(cudaMemset(d_dweight, 0, C * sizeof(float)));
    auto forward = [&] { stapo::rmsnorm_forward(d_out, d_rstd, nullptr, d_inp, nullptr, d_weight, N, C, 1e-5f, 0); };
    auto backward = [&] {
      stapo::rmsnorm_backward(d_dinp, d_dweight, d_scratch, d_dout, d_inp, d_weight, d_rstd, N, C, 0);
    };
    if (!bench) {
      std::printf("validate N=%d C=%d\n", N, C);
      std::vector<float> out(n), rstd(N), dinp(n, 0.0f), dweight(C, 0.0f);
      stapo::rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, 1e-5f);
      stapo::rmsnorm_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), rstd.data(), N, C);
      forward();
      backward();
      cudaCheck(cudaDeviceSynchronize());
      validate("out", from_device_bf16(d_out, n), out, 1e-2);
      validate("rstd", from_device(d_rstd, N), rstd, 1e-5);
      validate("dinp", from_device_bf16(d_dinp, n), dinp, 1e-2);
      validate("dweight", from_device(d_dweight, C), dweight, 1e-4);
    } else {
      const float fwd = time_ms(forward), bwd = time_ms(backward);
      // Bytes that must move: forward reads x and writes out (bf16); backward reads x, dout, dinp, writes dinp.
      std::printf("N=%d C=%d  forward %.3f ms (%.0f GB/s)  backward %.3f ms (%.0f GB/s)\n", N, C, fwd,
                  2.0 * n * 2 / fwd / 1e6, bwd, 4.0 * n * 2 / bwd / 1e6);
    }
    for (void* p : {(void*)d_inp, (void*)d_weight, (void*)d_dout, (void*)d_out, (void*)d_dinp, (void*)d_dweight,
                    (void*)d_rstd, (void*)d_scratch})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
