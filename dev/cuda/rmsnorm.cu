// Playground: RMSNorm fused with the residual add (kernels/rmsnorm.cu), forward and backward.
// Build: make rmsnorm   Run: ./rmsnorm
// Versions of the backward: 1 = one block per row (slices of 8 channels in registers; deterministic dweight
// through per-block partial rows); 2 = one warp per row (RmsnormBackwardKernel::warp, C ≤ 2048). Both validated
// against the CPU twin, then timed at Llama 3 8B's width (version 1 only) and Llama 3.2 1B's (both).
#include "dev/cuda/common.h"
#include "kernels/rmsnorm.cu"
#include "model/ops/rmsnorm.h"

using namespace playground;

int main() {
  print_device();
  const int shapes[3][2] = {{333, 1032}, {8192, 4096}, {16384, 2048}};  // validation, then two timed
  for (int pass = 0; pass < 3; ++pass) {
    const bool bench = pass > 0;
    const int N = shapes[pass][0], C = shapes[pass][1];
    const size_t n = (size_t)N * C;
    auto inp = random_normal(n, 1.0f, 1), weight = random_normal(C, 1.0f, 2), dout = random_normal(n, 1.0f, 3);
    bf16 *d_inp = to_device_bf16(inp), *d_weight = to_device_bf16(weight), *d_dout = to_device_bf16(dout);
    bf16 *d_out = device_alloc<bf16>(n), *d_dinp = device_alloc<bf16>(n);
    float* d_dweight = device_alloc<float>(C);  // fp32: a parameter gradient
    float *d_rstd = device_alloc<float>(N), *d_scratch = device_alloc<float>(stapo::rmsnorm_backward_scratch_floats(C));
    cudaCheck(cudaMemset(d_dinp, 0, n * sizeof(bf16)));
    cudaCheck(cudaMemset(d_dweight, 0, C * sizeof(float)));
    auto forward = [&] { stapo::rmsnorm_forward(d_out, d_rstd, nullptr, d_inp, nullptr, d_weight, N, C, 1e-5f, 0); };
    using stapo::RmsnormBackwardKernel;
    auto backward = [&](RmsnormBackwardKernel kernel) {
      stapo::rmsnorm_backward(d_dinp, d_dweight, d_scratch, d_dout, d_inp, d_weight, d_rstd, N, C, 0, true, kernel);
    };
    const int versions = stapo::rmsnorm_backward_warp_supported(C) ? 2 : 1;
    auto kernel_of = [](int version) {
      return version == 1 ? RmsnormBackwardKernel::block : RmsnormBackwardKernel::warp;
    };
    if (!bench) {
      std::printf("validate N=%d C=%d\n", N, C);
      std::vector<float> out(n), rstd(N), dinp(n, 0.0f), dweight(C, 0.0f);
      stapo::rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, 1e-5f);
      stapo::rmsnorm_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), rstd.data(), N, C);
      forward();
      cudaCheck(cudaDeviceSynchronize());
      validate("out", from_device_bf16(d_out, n), out, 1e-2);
      validate("rstd", from_device(d_rstd, N), rstd, 1e-5);
      for (int version = 1; version <= versions; ++version) {
        cudaCheck(cudaMemset(d_dinp, 0, n * sizeof(bf16)));
        cudaCheck(cudaMemset(d_dweight, 0, C * sizeof(float)));
        backward(kernel_of(version));
        cudaCheck(cudaDeviceSynchronize());
        std::printf("backward version %d\n", version);
        validate("dinp", from_device_bf16(d_dinp, n), dinp, 1e-2);
        validate("dweight", from_device(d_dweight, C), dweight, 1e-4);
      }
    } else {
      const float fwd = time_ms(forward);
      // Bytes that must move: forward reads x and writes out (bf16); backward reads x, dout, dinp, writes dinp.
      std::printf("N=%d C=%d  forward %.3f ms (%.0f GB/s)\n", N, C, fwd, 2.0 * n * 2 / fwd / 1e6);
      for (int version = 1; version <= versions; ++version) {
        const float bwd = time_ms([&] { backward(kernel_of(version)); });
        std::printf("  backward version %d %.3f ms (%.0f GB/s)\n", version, bwd, 4.0 * n * 2 / bwd / 1e6);
      }
    }
    for (void* p : {(void*)d_inp, (void*)d_weight, (void*)d_dout, (void*)d_out, (void*)d_dinp, (void*)d_dweight,
                    (void*)d_rstd, (void*)d_scratch})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
