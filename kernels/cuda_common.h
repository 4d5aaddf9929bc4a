// Error checks and device queries shared by every CUDA file. A failing CUDA or cuBLAS call becomes a
// stapo::Error naming the call site and the library's own reason.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "common/error.h"

namespace stapo {

inline void cuda_check(cudaError_t err, const char* file, int line) {
  if (err != cudaSuccess) fail("CUDA error at ", file, ":", line, ": ", cudaGetErrorString(err));
}

inline void cublas_check(cublasStatus_t status, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error at ", file, ":", line, ": ", cublasLtGetStatusString(status));
}

// True when at least one CUDA device can be used; otherwise `why` says what cudaGetDeviceCount reported.
bool cuda_device_available(std::string* why);

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for the current device.
std::string cuda_device_description();

// cudaMalloc of `count` elements (at least one, so the pointer is always valid), zeroed in stream order.
template <typename T>
T* device_alloc_zeroed(size_t count, cudaStream_t stream) {
  const size_t bytes = (count > 0 ? count : 1) * sizeof(T);
  void* p = nullptr;
  cuda_check(cudaMalloc(&p, bytes), __FILE__, __LINE__);
  cuda_check(cudaMemsetAsync(p, 0, bytes, stream), __FILE__, __LINE__);
  return static_cast<T*>(p);
}

}  // namespace stapo

#define cudaCheck(call) stapo::cuda_check((call), __FILE__, __LINE__)
#define cublasCheck(call) stapo::cublas_check((call), __FILE__, __LINE__)
