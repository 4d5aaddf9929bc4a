#include "kernels/cuda_common.h"

namespace stapo {

bool cuda_device_available(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = cat("cudaGetDeviceCount failed: ", cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error so later calls report their own
    return false;
  }
  if (count == 0) {
    if (why) *why = "cudaGetDeviceCount returned 0 devices";
    return false;
  }
  return true;
}

std::string cuda_device_description() {
  int device = 0;
  cudaCheck(cudaGetDevice(&device));
  cudaDeviceProp prop;
  cudaCheck(cudaGetDeviceProperties(&prop, device));
  return cat(prop.name, " (sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount, " SMs)");
}

}  // namespace stapo
