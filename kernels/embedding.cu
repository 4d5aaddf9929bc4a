// Token embedding forward (a gather) and its deterministic backward (see embedding.h).
#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/embedding.h"
#include "kernels/staging.h"

namespace stapo {

// ---- kernels ----

// One thread per 8 channels of one token.
__global__ void embedding_forward_kernel(bf16* out, const int32_t* tokens, const bf16* table, int N, int C) {
  const int vecs = C / 8;
  const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * vecs) return;
  const int n = (int)(idx / vecs), c = (int)(idx % vecs) * 8;
  *reinterpret_cast<int4*>(out + (size_t)n * C + c) =
      *reinterpret_cast<const int4*>(table + (size_t)tokens[n] * C + c);
}

// blockIdx.x = token group, threads over 8-channel slices; one add per (token, channel) into dtable.
__global__ void embedding_backward_kernel(float* dtable, const bf16* dout, const int32_t* order,
                                          const int32_t* group_start, const int32_t* group_token, int C) {
  const int g = blockIdx.x;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
  if (c >= C) return;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int p = group_start[g]; p < group_start[g + 1]; ++p) {
    float d[8];
    load_bf16x8(d, dout + (size_t)order[p] * C + c);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] += d[e];
  }
  float4* row = reinterpret_cast<float4*>(dtable + (size_t)group_token[g] * C + c);  // 32-byte aligned: C % 8 == 0
  const float4 lo = row[0], hi = row[1];
  row[0] = make_float4(lo.x + acc[0], lo.y + acc[1], lo.z + acc[2], lo.w + acc[3]);
  row[1] = make_float4(hi.x + acc[4], hi.y + acc[5], hi.z + acc[6], hi.w + acc[7]);
}

// ---- launchers ----

static void check_channels(int C, const char* op) {
  STAPO_CHECK(C > 0 && C % 8 == 0, op, ": C = ", C, " must be a positive multiple of 8");
}

void embedding_forward(bf16* out, const int32_t* tokens, const bf16* table, int N, int C, cudaStream_t stream) {
  check_channels(C, "embedding_forward");
  check_aligned16(out, "embedding_forward", "out");
  check_aligned16(table, "embedding_forward", "table");
  if (N == 0) return;
  const int block = 256;
  const size_t threads = (size_t)N * (C / 8);
  embedding_forward_kernel<<<(unsigned)((threads + block - 1) / block), block, 0, stream>>>(out, tokens, table, N,
                                                                                            C);
  cudaCheck(cudaGetLastError());
}

EmbeddingGradIndex embedding_grad_index_create(int max_tokens) {
  STAPO_CHECK(max_tokens > 0, "embedding_grad_index_create: max_tokens = ", max_tokens, " must be positive");
  EmbeddingGradIndex index;
  index.capacity = max_tokens;
  cudaCheck(cudaMalloc(&index.order, sizeof(int32_t) * max_tokens));
  cudaCheck(cudaMalloc(&index.group_start, sizeof(int32_t) * (max_tokens + 1)));
  cudaCheck(cudaMalloc(&index.group_token, sizeof(int32_t) * max_tokens));
  index.staging = new HostStaging;
  return index;
}

void embedding_grad_index_free(EmbeddingGradIndex& index) {
  cudaCheck(cudaFree(index.order));
  cudaCheck(cudaFree(index.group_start));
  cudaCheck(cudaFree(index.group_token));
  delete index.staging;
  index = EmbeddingGradIndex{};
}

void embedding_grad_index_build(EmbeddingGradIndex& index, const int32_t* host_tokens, int N, int V,
                                cudaStream_t stream) {
  STAPO_CHECK(N >= 0 && N <= index.capacity, "embedding_grad_index_build: N = ", N, " exceeds the capacity ",
              index.capacity, " given to embedding_grad_index_create");
  for (int i = 0; i < N; ++i)
    STAPO_CHECK(host_tokens[i] >= 0 && host_tokens[i] < V, "embedding_grad_index_build: token ", host_tokens[i],
                " at position ", i, " is outside the vocabulary [0, ", V, ")");
  std::vector<int32_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  // Stable: positions of one token stay in increasing order, so the summation order is fixed.
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return host_tokens[a] < host_tokens[b]; });
  std::vector<int32_t> start, token;
  for (int p = 0; p < N; ++p)
    if (p == 0 || host_tokens[order[p]] != host_tokens[order[p - 1]]) {
      start.push_back(p);
      token.push_back(host_tokens[order[p]]);
    }
  start.push_back(N);
  index.groups = (int)token.size();
  index.staging->upload({{index.order, order.data(), sizeof(int32_t) * N},
                         {index.group_token, token.data(), sizeof(int32_t) * token.size()},
                         {index.group_start, start.data(), sizeof(int32_t) * start.size()}},
                        stream);
}

void embedding_backward(float* dtable, const bf16* dout, const EmbeddingGradIndex& index, int C, cudaStream_t stream) {
  check_channels(C, "embedding_backward");
  check_aligned16(dtable, "embedding_backward", "dtable");
  check_aligned16(dout, "embedding_backward", "dout");
  if (index.groups == 0) return;
  const int block = 128;
  dim3 grid(index.groups, ceil_div(C / 8, block));
  embedding_backward_kernel<<<grid, block, 0, stream>>>(dtable, dout, index.order, index.group_start,
                                                        index.group_token, C);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
