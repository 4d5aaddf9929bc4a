// Playground: RoPE with Llama 3 scaling (kernels/rope.cu), forward and backward.
// Build: make rope   Run: ./rope
// Versions: 1 = the mainline kernel (one thread per 8 channel pairs, sincosf per pair). Timed on Llama 3 8B's
// query heads.
#include "dev/cuda/common.h"
#include "kernels/rope.cu"
#include "model/ops/rope.h"

using namespace playground;

int main() {
  print_device();
  stapo::RopeScaling scaling;
  scaling.llama3 = true;
  scaling.factor = 8.0;
  scaling.low_freq_factor = 1.0;
  scaling.high_freq_factor = 4.0;
  scaling.original_max_position_embeddings = 8192;
  for (int pass = 0; pass < 2; ++pass) {
    const bool bench = pass == 1;
    const int N = bench ? 8192 : 257, nh = bench ? 32 : 5, D = 128;
    const size_t n = (size_t)N * nh * D;
    auto x = random_normal(n, 1.0f, 1);
    std::vector<int32_t> positions(N);
    for (int i = 0; i < N; ++i) positions[i] = (i * 7) % 9000;
    auto inv_freq = stapo::rope_inv_freq<float>(D, 500000.0, scaling);
    bf16* d_x = to_device_bf16(x);
    int32_t* d_positions = to_device(positions);
    float* d_inv_freq = to_device(inv_freq);
    auto forward = [&] { stapo::rope_forward(d_x, d_positions, d_inv_freq, N, nh, D, 0); };
    auto backward = [&] { stapo::rope_backward(d_x, d_positions, d_inv_freq, N, nh, D, 0); };
    if (!bench) {
      std::printf("validate N=%d nh=%d D=%d\n", N, nh, D);
      std::vector<float> ref = x;
      stapo::rope_forward(ref.data(), positions.data(), inv_freq.data(), N, nh, D);
      forward();
      validate("forward", from_device_bf16(d_x, n), ref, 1e-2);
      backward();  // rotates back
      validate("round trip", from_device_bf16(d_x, n), x, 1e-2);
    } else {
      const float fwd = time_ms(forward), bwd = time_ms(backward);
      std::printf("N=%d nh=%d D=%d  forward %.3f ms (%.0f GB/s)  backward %.3f ms\n", N, nh, D, fwd,
                  2.0 * n * 2 / fwd / 1e6, bwd);
    }
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_positions));
    cudaCheck(cudaFree(d_inv_freq));
  }
  return 0;
}
