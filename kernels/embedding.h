// Token embedding, the GPU twin of model/ops/embedding.h.
//   forward:  out[i] = table[tokens[i]]                 tokens (N) int32, table (V, C), out (N, C)   out =
//   backward: dtable[tokens[i]] += dout[i]              dout (N, C) bf16, dtable (V, C) fp32          +=
// The backward is deterministic: positions are grouped by token on the host (the batch's tokens are there
// anyway), and one thread sums a token's group in a fixed order in fp32 before one add into dtable (fp32, so
// that gradients accumulated over micro-batches are not rounded to bf16 at every add).
// C must be a multiple of 8 (128-bit accesses).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stapo {

class HostStaging;  // kernels/staging.h

void embedding_forward(__nv_bfloat16* out, const int32_t* tokens, const __nv_bfloat16* table, int N, int C,
                       cudaStream_t stream);

// Positions grouped by token, on the device: group g holds token group_token[g] at positions
// order[group_start[g] .. group_start[g+1]). Built from the host copy of the batch's tokens.
struct EmbeddingGradIndex {
  int capacity = 0;               // max N
  int groups = 0;                 // distinct tokens in the last build
  int32_t* order = nullptr;       // (N)
  int32_t* group_start = nullptr; // (N+1)
  int32_t* group_token = nullptr; // (N)
  HostStaging* staging = nullptr; // pinned upload buffers: building never waits for the stream's earlier work
};

EmbeddingGradIndex embedding_grad_index_create(int max_tokens);
void embedding_grad_index_free(EmbeddingGradIndex& index);
// Checks every token is in [0, V) (naming the first bad position) and uploads the grouping.
void embedding_grad_index_build(EmbeddingGradIndex& index, const int32_t* host_tokens, int N, int V,
                                cudaStream_t stream);

void embedding_backward(float* dtable, const __nv_bfloat16* dout, const EmbeddingGradIndex& index, int C,
                        cudaStream_t stream);

}  // namespace stapo
