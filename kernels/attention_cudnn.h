// Causal grouped-query attention through cuDNN's fused SDPA (built with the cuDNN frontend graph API): the
// comparison path for our own flash kernels (kernels/attention.h). Compiled in when CMake finds cuDNN and the
// cudnn-frontend headers (dev/deps.sh --cudnn-frontend); chosen at run time (train_stapo --attention cudnn).
//
// Same tensors, layouts and contract as attention_forward/attention_backward, with two differences:
//   - each row holds ONE sequence from position 0, then padding (segments 0…0 then −1…−1): cuDNN's padding
//     mask takes a length per row; several packed sequences per row would need its ragged layout, not built
//     here, so they are refused (train without --pack, or use --attention flash2);
//   - lse is cuDNN's softmax statistics, laid out (rows, H, T) instead of (N, H); only this path's backward
//     reads it.
// Padding positions get out = 0 and dq = dk = dv = 0 as in the flash kernels (cleared here, since cuDNN
// leaves masked rows unspecified). Graphs are built once per shape (slow: cuDNN compiles them) and cached.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "model/ops/attention.h"  // defines: AttentionShape

namespace stapo {

// The sequence length of each row, from per-token segments (rows·T, host); throws, naming the row and
// position, when a row is not one sequence from position 0 followed by padding.
std::vector<int32_t> cudnn_attention_row_lengths(const std::vector<int32_t>& segments, int rows, int T);

class CudnnAttention {
 public:
  CudnnAttention();  // creates the cuDNN handle: needs a CUDA device
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Once per batch, before forward/backward: the row lengths from the batch's segments (host).
  void set_rows(const std::vector<int32_t>& segments, int rows, int T, cudaStream_t stream);

  void forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
               const __nv_bfloat16* v, const AttentionShape& shape, cudaStream_t stream);

  void backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
                const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                const __nv_bfloat16* v, const AttentionShape& shape, cudaStream_t stream);

 private:
  struct Impl;  // keeps cudnn_frontend.h (a large header) out of every file that includes this one
  std::unique_ptr<Impl> impl_;
};

}  // namespace stapo
