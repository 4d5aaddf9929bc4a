// Token embedding, the GPU twin of model/ops/embedding.h.
//   forward:  out[i] = table[tokens[i]]                 tokens (N) int32, table (V, C), out (N, C)   out =
//   backward: dtable[tokens[i]] += dout[i]              dout (N, C) bf16, dtable (V, C) fp32          +=
// The backward is deterministic: positions are grouped by token (on the host, where the batch's tokens are
// anyway, or on the device), and one thread sums a token's group in a fixed order in fp32 before one add into dtable (fp32, so
// that gradients accumulated over micro-batches are not rounded to bf16 at every add).
// C must be a multiple of 8 (128-bit accesses).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace stapo {

class HostStaging;  // kernels/staging.h

void embedding_forward(__nv_bfloat16* out, const int32_t* tokens, const __nv_bfloat16* table, int N, int C,
                       cudaStream_t stream);

// Positions grouped by token, on the device: group g holds token group_token[g] at positions
// order[group_start[g] .. group_start[g+1]), tokens increasing, positions increasing within a group. Built either
// from the host copy of the batch's tokens (a stable sort, uploaded) or on the device from the tokens already there
// (embedding_grad_index_build_device: CUB's stable radix sort, then one block numbering the groups; no host work or
// upload per step); both give the same index, so the same gradients bit for bit.
inline size_t embedding_grad_index_sort_bound(int max_tokens) { return 16 * (size_t)max_tokens + (1 << 20); }

struct EmbeddingGradIndex {
  int capacity = 0;               // max N
  int groups = 0;                 // distinct tokens in the last host build; N (an upper bound) after a device build
  int32_t* order = nullptr;       // (N)
  int32_t* group_start = nullptr; // (N+1)
  int32_t* group_token = nullptr; // (N)
  HostStaging* staging = nullptr; // pinned upload buffers: building never waits for the stream's earlier work
  // The device build's: the group count (the backward's blocks beyond it return), its sorted tokens, the positions
  // 0..N−1 it sorts, CUB's temporary storage.
  int32_t* device_groups = nullptr;  // (1)
  bool device_groups_valid = false;  // the last build was on the device
  int32_t *sorted_tokens = nullptr, *positions = nullptr;  // (N) each
  void* cub_temp = nullptr;
  size_t cub_temp_bytes = 0;
};

// device_build: also the buffers of embedding_grad_index_build_device, at most
// embedding_grad_index_device_bytes(max_tokens) more (CUB's sort storage is checked against its bound here).
EmbeddingGradIndex embedding_grad_index_create(int max_tokens, bool device_build = false);
// Bytes the device build adds: sorted tokens, positions, the group count, and a bound on CUB's radix-sort storage
// (its key and value double buffers, 8 bytes per token, and histograms: 16 per token + 1 MiB).
inline size_t embedding_grad_index_device_bytes(int max_tokens) {
  return (2 * (size_t)max_tokens + 1) * sizeof(int32_t) + embedding_grad_index_sort_bound(max_tokens);
}
void embedding_grad_index_free(EmbeddingGradIndex& index);
// Checks every token is in [0, V) (naming the first bad position) and uploads the grouping.
void embedding_grad_index_build(EmbeddingGradIndex& index, const int32_t* host_tokens, int N, int V,
                                cudaStream_t stream);

// The same index from the batch's tokens on the device (the index created with device_build) (N int32, each in [0, V): pair_batch_validate checks them on
// the host first). Enqueued on the stream; the host waits for nothing.
void embedding_grad_index_build_device(EmbeddingGradIndex& index, const int32_t* tokens, int N, int V,
                                       cudaStream_t stream);

void embedding_backward(float* dtable, const __nv_bfloat16* dout, const EmbeddingGradIndex& index, int C,
                        cudaStream_t stream);

}  // namespace stapo
