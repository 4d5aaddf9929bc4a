// What every kernel test needs: device arrays that start poisoned (all bits set: NaN in bf16 and fp32, −1 in
// int32, so an element a kernel forgets to write fails the comparison), bf16 round trips, and the bf16 check.
#pragma once
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "kernels/cuda_common.h"
#include "tests/test_util.h"

namespace stapo::test {

using bf16 = __nv_bfloat16;

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    cudaCheck(cudaMalloc(&ptr_, (n ? n : 1) * sizeof(T)));
    poison();
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  void poison() { cudaCheck(cudaMemset(ptr_, 0xff, n_ * sizeof(T))); }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    cudaCheck(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    cudaCheck(cudaDeviceSynchronize());
    std::vector<T> host(n_);
    cudaCheck(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<float> round_bf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
  return out;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = __float2bfloat16_rn(x[i]);
  return out;
}

// A bf16 device copy of x (round to nearest); tests feed the CPU twin round_bf16(x) so both see equal inputs.
inline std::unique_ptr<DeviceArray<bf16>> device_bf16(const std::vector<float>& x) {
  return std::make_unique<DeviceArray<bf16>>(to_bf16(x));
}

inline std::vector<float> download_bf16(const DeviceArray<bf16>& d) {
  std::vector<bf16> raw = d.download();
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

inline double rms(const std::vector<float>& x) {
  double sum = 0;
  for (float v : x) sum += (double)v * v;
  return x.empty() ? 0.0 : std::sqrt(sum / x.size());
}

// The bf16 rule: ‖got − ref‖/‖ref‖ ≤ tol, and per element |got − ref| ≤ 3·tol·(rms(ref) + |ref|), so a few
// wrong or unwritten elements fail even when the norm would hide them (NaN always fails), while the rounding
// of single elements whose terms cancel does not. `scale` floors rms(ref) for a reference that is exactly zero
// where the GPU's terms cancel only up to rounding: their size, not zero, sets the error to expect.
inline ::testing::AssertionResult bf16_close(const std::vector<float>& got, const std::vector<float>& ref,
                                             double tol, double scale = 0) {
  if (got.size() != ref.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  const double size = std::max(rms(ref), scale);
  double squared = 0;
  for (size_t i = 0; i < got.size(); ++i) squared += std::pow((double)got[i] - ref[i], 2);
  const double rms_error = got.empty() ? 0.0 : std::sqrt(squared / got.size());
  const double err = size > 0 ? rms_error / size : rms_error;
  if (!(err <= tol)) return ::testing::AssertionFailure() << "relative error " << err << " > " << tol;
  return all_close(got, ref, 3 * tol * size, 3 * tol);
}

}  // namespace stapo::test
