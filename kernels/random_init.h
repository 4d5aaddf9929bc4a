// Weights drawn on the device, for benchmarks of large models (no multi-GB upload of host-drawn weights):
//   out[i] = mean + stddev · N(0, 1), the normal from a hash of (seed, i) by Box-Muller
// Deterministic for a given (seed, n) whatever the grid; stddev = 0 fills `mean` exactly (RMSNorm weights 1).
// Not the CPU's model_init_random (std::mt19937_64): the two draw different numbers from the same seed.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace stapo {

// splitmix64's finaliser: independent 64-bit values from consecutive seeds (also the engines' per-tensor and
// per-step seeds for stochastic rounding).
__host__ __device__ inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// out (n) fp32.
void random_normal_fill(float* out, size_t n, float mean, float stddev, uint64_t seed, cudaStream_t stream);

}  // namespace stapo
