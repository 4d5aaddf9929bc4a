// fp32 -> bf16 conversion, elementwise. Layout-free: any contiguous tensor.
// Grid-stride loop so one launch covers tensors larger than the grid.
#include "kernels/convert.h"
#include "kernels/cuda_common.h"

namespace stapo {

__global__ void convert_fp32_to_bf16_kernel(__nv_bfloat16* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

void convert_fp32_to_bf16(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int block = 256;
  size_t blocks = (n + block - 1) / block;
  int grid = static_cast<int>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  convert_fp32_to_bf16_kernel<<<grid, block, 0, stream>>>(out, in, n);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
