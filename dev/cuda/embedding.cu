// Playground: token embedding forward (gather) and deterministic backward (kernels/embedding.cu).
// Build: make embedding   Run: ./embedding
// Versions of the backward's index (positions grouped by token): 1 = built on the host (a stable sort) and
// uploaded; 2 = built on the device from the uploaded tokens (embedding_grad_index_build_device). The backward
// (one fp32 sum per token) over each, validated against the CPU twin; the builds and the backward timed.
#include "dev/cuda/common.h"
#include "kernels/embedding.cu"
#include "kernels/staging.cu"
#include "model/ops/embedding.h"

using namespace playground;

int main() {
  print_device();
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    const int N = bench ? 8192 : 515, V = bench ? 128256 : 101, C = bench ? 4096 : 264;
    std::vector<int32_t> tokens(N);
    std::mt19937_64 rng(5);
    for (auto& t : tokens) t = (int32_t)(rng() % (bench ? 2000 : V));  // frequent tokens repeat, as in text
    auto table = random_normal((size_t)V * C, 1.0f, 1), dout = random_normal((size_t)N * C, 1.0f, 2);
    bf16 *d_table = to_device_bf16(table), *d_dout = to_device_bf16(dout);
    bf16* d_out = device_alloc<bf16>((size_t)N * C);
    float* d_dtable = device_alloc<float>((size_t)V * C);  // fp32: a parameter gradient
    cudaCheck(cudaMemset(d_dtable, 0, (size_t)V * C * sizeof(float)));
    int32_t* d_tokens = to_device(tokens);
    auto index = stapo::embedding_grad_index_create(N), device_index = stapo::embedding_grad_index_create(N, true);
    auto build_host = [&] { stapo::embedding_grad_index_build(index, tokens.data(), N, V, 0); };
    auto build_device = [&] { stapo::embedding_grad_index_build_device(device_index, d_tokens, N, V, 0); };
    build_host();
    build_device();
    auto forward = [&] { stapo::embedding_forward(d_out, d_tokens, d_table, N, C, 0); };
    auto backward = [&] { stapo::embedding_backward(d_dtable, d_dout, index, C, 0); };
    auto backward_device = [&] { stapo::embedding_backward(d_dtable, d_dout, device_index, C, 0); };
    if (!bench) {
      std::printf("validate N=%d V=%d C=%d\n", N, V, C);
      std::vector<float> out((size_t)N * C), dtable((size_t)V * C, 0.0f);
      stapo::embedding_forward(out.data(), tokens.data(), table.data(), N, C);
      stapo::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, C);
      forward();
      backward();
      cudaCheck(cudaDeviceSynchronize());
      validate("out", from_device_bf16(d_out, out.size()), out, 0.0);
      validate("dtable", from_device(d_dtable, dtable.size()), dtable, 1e-5);
      cudaCheck(cudaMemset(d_dtable, 0, (size_t)V * C * sizeof(float)));
      backward_device();
      cudaCheck(cudaDeviceSynchronize());
      validate("dtable, version 2 index", from_device(d_dtable, dtable.size()), dtable, 1e-5);
    } else {
      const float fwd = time_ms(forward), bwd = time_ms(backward), bwd2 = time_ms(backward_device);
      // The host build's time is the host's (sort + enqueued upload) as the stream sees it: time_ms's events.
      const float host_build = time_ms(build_host), device_build = time_ms(build_device);
      std::printf("N=%d C=%d  forward %.3f ms (%.0f GB/s)  backward %.3f ms (%d distinct tokens), over the device "
                  "index %.3f ms\n  index build: version 1 (host) %.3f ms, version 2 (device) %.3f ms\n", N, C, fwd,
                  2.0 * N * C * 2 / fwd / 1e6, bwd, index.groups, bwd2, host_build, device_build);
    }
    stapo::embedding_grad_index_free(index);
    stapo::embedding_grad_index_free(device_index);
    for (void* p : {(void*)d_table, (void*)d_dout, (void*)d_out, (void*)d_dtable, (void*)d_tokens})
      cudaCheck(cudaFree(p));
  }
  return 0;
}
