// Playground: the fused lm_head + log-prob + entropy (kernels/lm_head.cu), forward and backward.
// Build: make lm_head   Run: ./lm_head [chunk_rows] [chunk_vocab]
// Versions: 1 = the mainline path (cuBLASLt fp32 logits per (token chunk × vocabulary chunk), online max/LSE,
// recomputed logits in the backward). The chunk sizes are the tuning knob: larger chunks feed cuBLASLt better,
// smaller ones need less memory (workspace printed).
#include "dev/cuda/common.h"
#include "kernels/convert.cu"
#include "kernels/lm_head.cu"
#include "kernels/matmul.cu"
#include "model/ops/lm_head.h"
#include "model/ops/matmul.h"

using namespace playground;

int main(int argc, char** argv) {
  const int chunk_rows = argc > 1 ? std::atoi(argv[1]) : 2048, chunk_vocab = argc > 2 ? std::atoi(argv[2]) : 16384;
  print_device();
  auto ctx = stapo::matmul_context_create();
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    // Validation splits tokens and vocabulary unevenly; the benchmark is Llama 3 8B's head on 8k tokens.
    const int N = bench ? 8192 : 300, C = bench ? 4096 : 256, V = bench ? 128256 : 5000;
    const int rows = bench ? chunk_rows : 64, vocab = bench ? chunk_vocab : 1024;
    auto h = random_normal((size_t)N * C, 1.0f, 1), w = random_normal((size_t)V * C, 3.0f / std::sqrt((float)C), 2);
    auto dlogp = random_normal(N, 1.0f, 3);
    std::vector<int32_t> targets(N);
    for (int i = 0; i < N; ++i) targets[i] = (int32_t)(((size_t)i * 7919) % V);
    bf16 *d_h = to_device_bf16(h), *d_w = to_device_bf16(w), *d_dh = device_alloc<bf16>((size_t)N * C);
    float* d_dw = device_alloc<float>((size_t)V * C);  // fp32: a parameter gradient
    cudaCheck(cudaMemset(d_dw, 0, (size_t)V * C * sizeof(float)));
    float *d_logp = device_alloc<float>(N), *d_entropy = device_alloc<float>(N), *d_lse = device_alloc<float>(N),
          *d_dlogp = to_device(dlogp);
    int32_t* d_targets = to_device(targets);
    auto ws = stapo::lm_head_workspace_create(C, rows, vocab);
    auto forward = [&] {
      stapo::lm_head_forward(ctx, ws, d_logp, d_entropy, d_lse, d_h, d_w, d_targets, N, C, V, 0);
    };
    auto backward = [&] {
      stapo::lm_head_backward(ctx, ws, d_dh, d_dw, d_dlogp, d_lse, d_h, d_w, d_targets, N, C, V, 0);
    };
    if (!bench) {
      std::printf("validate N=%d C=%d V=%d chunks %dx%d\n", N, C, V, rows, vocab);
      std::vector<float> logp(N), entropy(N), dh((size_t)N * C), dw((size_t)V * C, 0.0f);
      stapo::lm_head_forward(logp.data(), entropy.data(), h.data(), w.data(), targets.data(), N, C, V);
      stapo::lm_head_backward(dh.data(), dw.data(), dlogp.data(), h.data(), w.data(), targets.data(), N, C, V);
      forward();
      backward();
      cudaCheck(cudaDeviceSynchronize());
      validate("logp", from_device(d_logp, N), logp, 1e-4);
      validate("entropy", from_device(d_entropy, N), entropy, 1e-4);
      validate("dh", from_device_bf16(d_dh, dh.size()), dh, 1e-2);
      validate("dw", from_device(d_dw, dw.size()), dw, 1e-2);
    } else {
      const float fwd = time_ms(forward, 3), bwd = time_ms(backward, 3);
      const double flops = 2.0 * N * C * V;
      const double workspace_mb = ((double)rows * vocab * 6 + (double)rows * C * 4 + rows * 16.0) / 1e6;
      std::printf("N=%d C=%d V=%d chunks %dx%d (workspace %.0f MB)  forward %.2f ms (%.0f TFLOP/s)  backward %.2f ms "
                  "(%.0f TFLOP/s)\n", N, C, V, rows, vocab, workspace_mb, fwd, flops / fwd / 1e9, bwd,
                  3 * flops / bwd / 1e9);
    }
    stapo::lm_head_workspace_free(ws);
    for (void* p : {(void*)d_h, (void*)d_w, (void*)d_dh, (void*)d_dw, (void*)d_logp, (void*)d_entropy, (void*)d_lse,
                    (void*)d_dlogp, (void*)d_targets})
      cudaCheck(cudaFree(p));
  }
  stapo::matmul_context_free(ctx);
  return 0;
}
