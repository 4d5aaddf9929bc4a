#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace stapo {

// out[i] = bf16(in[i]), round to nearest even. Used to upload fp32 master weights as bf16 copies.
void convert_fp32_to_bf16(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream);

}  // namespace stapo
