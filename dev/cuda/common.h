// Shared by the kernel playgrounds in dev/cuda (llm.c's dev/cuda/common.h in spirit): random inputs, bf16
// round trips, a correctness check that prints the worst element, and a CUDA-event timing loop.
// Playgrounds include the mainline kernel sources (kernels/*.cu) and the CPU twins (model/ops/*.cpp) directly,
// so each is one nvcc command (see the Makefile) and always measures the code the trainer runs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/cuda_common.h"

namespace playground {

using bf16 = __nv_bfloat16;

inline std::vector<float> random_normal(size_t n, float stddev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = __bfloat162float(__float2bfloat16_rn(dist(rng)));  // representable in bf16
  return v;
}

template <typename T>
T* device_alloc(size_t n) {
  T* p = nullptr;
  cudaCheck(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
  cudaCheck(cudaMemset(p, 0xff, n * sizeof(T)));  // NaN poison: unwritten outputs fail the check
  return p;
}

inline bf16* to_device_bf16(const std::vector<float>& x) {
  std::vector<bf16> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = __float2bfloat16_rn(x[i]);
  bf16* d = device_alloc<bf16>(x.size());
  cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(bf16), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
T* to_device(const std::vector<T>& x) {
  T* d = device_alloc<T>(x.size());
  cudaCheck(cudaMemcpy(d, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

inline std::vector<float> from_device_bf16(const bf16* d, size_t n) {
  std::vector<bf16> h(n);
  cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(h[i]);
  return out;
}

inline std::vector<float> from_device(const float* d, size_t n) {
  std::vector<float> out(n);
  cudaCheck(cudaMemcpy(out.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return out;
}

// ‖got − ref‖/‖ref‖ ≤ tol; prints the worst element. Exits on failure: benchmarking wrong code is pointless.
inline void validate(const char* name, const std::vector<float>& got, const std::vector<float>& ref, double tol) {
  double num = 0, den = 0, worst = -1;
  size_t worst_at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs((double)got[i] - ref[i]);
    if (!(d <= worst)) {  // NaN counts as worst
      worst = std::isnan(d) ? INFINITY : d;
      worst_at = i;
    }
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  const double rel = std::sqrt(num / (den > 0 ? den : 1));
  std::printf("  %-10s rel err %.2e, worst [%zu] got %g want %g\n", name, rel, worst_at, got[worst_at], ref[worst_at]);
  if (!(rel <= tol)) {
    std::printf("  %s: MISMATCH (tolerance %.1e)\n", name, tol);
    std::exit(1);
  }
}

// Mean milliseconds of `repeats` launches after one warm-up.
template <typename F>
float time_ms(F&& launch, int repeats = 20) {
  launch();
  cudaEvent_t start, stop;
  cudaCheck(cudaEventCreate(&start));
  cudaCheck(cudaEventCreate(&stop));
  cudaCheck(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i) launch();
  cudaCheck(cudaEventRecord(stop));
  cudaCheck(cudaEventSynchronize(stop));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, start, stop));
  cudaCheck(cudaEventDestroy(start));
  cudaCheck(cudaEventDestroy(stop));
  return ms / repeats;
}

inline void print_device() {
  int device = 0;
  cudaDeviceProp prop;
  cudaCheck(cudaGetDevice(&device));
  cudaCheck(cudaGetDeviceProperties(&prop, device));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
}

}  // namespace playground
