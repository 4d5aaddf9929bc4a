// Token embedding forward (a gather) and its deterministic backward (see embedding.h).
#include <algorithm>
#include <numeric>
#include <vector>

#include <cub/cub.cuh>

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
// After a device build gridDim.x is N, an upper bound: the blocks beyond *device_groups return.
__global__ void embedding_backward_kernel(float* dtable, const bf16* dout, const int32_t* order,
                                          const int32_t* group_start, const int32_t* group_token,
                                          const int32_t* device_groups, int C) {
  const int g = blockIdx.x;
  if (device_groups && g >= *device_groups) return;
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

__global__ void iota_kernel(int32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = i;
}

// One block numbers the groups of the sorted tokens (a head: where the token changes). Thread t takes the
// positions [t·chunk, (t+1)·chunk): it counts its heads, a block-wide exclusive scan of the counts gives its first
// group's number, and a second pass writes each of its groups' start and token; the last thread the group count
// and the closing start N. N is a batch's tokens (~10⁴): chunk stays small, and one block avoids a second launch.
constexpr int GROUP_INDEX_THREADS = 1024;
__global__ void __launch_bounds__(GROUP_INDEX_THREADS)
    group_index_kernel(int32_t* group_start, int32_t* group_token, int32_t* groups, const int32_t* sorted_tokens,
                       int n) {
  __shared__ int32_t warp_totals[GROUP_INDEX_THREADS / 32];
  const int chunk = ceil_div(n, GROUP_INDEX_THREADS);
  const int begin = min(n, (int)threadIdx.x * chunk), end = min(n, begin + chunk);
  auto head = [&](int p) { return p == 0 || sorted_tokens[p] != sorted_tokens[p - 1]; };
  int count = 0;
  for (int p = begin; p < end; ++p) count += head(p);
  // Inclusive scan within the warp, then over the warps' totals.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = count;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += v;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int total = warp_totals[lane];
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, total, offset);
      if (lane >= offset) total += v;
    }
    warp_totals[lane] = total;  // inclusive over the warps
  }
  __syncthreads();
  int id = inclusive - count + (warp > 0 ? warp_totals[warp - 1] : 0);  // this thread's first group
  for (int p = begin; p < end; ++p)
    if (head(p)) {
      group_start[id] = p;
      group_token[id] = sorted_tokens[p];
      ++id;
    }
  if (threadIdx.x == GROUP_INDEX_THREADS - 1) {
    const int total = warp_totals[GROUP_INDEX_THREADS / 32 - 1];
    *groups = total;
    group_start[total] = n;
  }
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

// The temporary storage CUB's sort over the key bits [0, bits) needs for N items.
static size_t embedding_index_temp_bytes(const EmbeddingGradIndex& index, int N, int bits) {
  size_t bytes = 0;
  cudaCheck(cub::DeviceRadixSort::SortPairs(nullptr, bytes, index.order, index.sorted_tokens, index.positions,
                                            index.order, N, 0, bits));
  return std::max(bytes, (size_t)1);
}

EmbeddingGradIndex embedding_grad_index_create(int max_tokens, bool device_build) {
  STAPO_CHECK(max_tokens > 0, "embedding_grad_index_create: max_tokens = ", max_tokens, " must be positive");
  EmbeddingGradIndex index;
  index.capacity = max_tokens;
  cudaCheck(cudaMalloc(&index.order, sizeof(int32_t) * max_tokens));
  cudaCheck(cudaMalloc(&index.group_start, sizeof(int32_t) * (max_tokens + 1)));
  cudaCheck(cudaMalloc(&index.group_token, sizeof(int32_t) * max_tokens));
  index.staging = new HostStaging;
  if (!device_build) return index;
  // The device build's buffers and CUB's temporary storage for the sort at this capacity (over all 32 key bits: it
  // bounds the sort over fewer).
  cudaCheck(cudaMalloc(&index.device_groups, sizeof(int32_t)));
  cudaCheck(cudaMalloc(&index.sorted_tokens, sizeof(int32_t) * max_tokens));
  cudaCheck(cudaMalloc(&index.positions, sizeof(int32_t) * max_tokens));
  index.cub_temp_bytes = embedding_index_temp_bytes(index, max_tokens, 32);
  STAPO_CHECK(index.cub_temp_bytes <= embedding_grad_index_sort_bound(max_tokens), "embedding_grad_index_create: "
              "CUB's radix sort of ", max_tokens, " tokens asks ", index.cub_temp_bytes, " bytes, more than the ",
              embedding_grad_index_sort_bound(max_tokens), " that kernels/embedding.h's bound (and the memory plan) "
              "allow: raise embedding_grad_index_sort_bound");
  cudaCheck(cudaMalloc(&index.cub_temp, index.cub_temp_bytes));
  return index;
}

void embedding_grad_index_free(EmbeddingGradIndex& index) {
  cudaCheck(cudaFree(index.order));
  cudaCheck(cudaFree(index.group_start));
  cudaCheck(cudaFree(index.group_token));
  for (void* p : {(void*)index.device_groups, (void*)index.sorted_tokens, (void*)index.positions,
                  index.cub_temp})
    if (p) cudaCheck(cudaFree(p));
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
  index.device_groups_valid = false;
  index.staging->upload({{index.order, order.data(), sizeof(int32_t) * N},
                         {index.group_token, token.data(), sizeof(int32_t) * token.size()},
                         {index.group_start, start.data(), sizeof(int32_t) * start.size()}},
                        stream);
}

// Stable radix sort of (token, position) by token over the bits V needs: positions grouped by token in increasing
// order, as the host's stable_sort; then one block numbers the groups and writes their starts and tokens.
void embedding_grad_index_build_device(EmbeddingGradIndex& index, const int32_t* tokens, int N, int V,
                                       cudaStream_t stream) {
  STAPO_CHECK(N >= 0 && N <= index.capacity, "embedding_grad_index_build_device: N = ", N, " exceeds the capacity ",
              index.capacity, " given to embedding_grad_index_create");
  STAPO_CHECK(V > 0, "embedding_grad_index_build_device: V = ", V, " must be positive");
  STAPO_CHECK(index.cub_temp != nullptr, "embedding_grad_index_build_device: the index was created without "
              "device_build (embedding_grad_index_create(max_tokens, true))");
  index.groups = N;  // an upper bound: the backward launches this many blocks, those beyond device_groups return
  index.device_groups_valid = true;
  if (N == 0) return;
  int bits = 1;
  while (bits < 31 && (1 << bits) < V) ++bits;
  size_t bytes = embedding_index_temp_bytes(index, N, bits);
  STAPO_CHECK(bytes <= index.cub_temp_bytes, "embedding_grad_index_build_device: CUB asks ", bytes,
              " bytes of temporary storage, ", index.cub_temp_bytes, " were allocated for ", index.capacity,
              " tokens");
  const int blocks = ceil_div(N, 256);
  iota_kernel<<<blocks, 256, 0, stream>>>(index.positions, N);
  cudaCheck(cudaGetLastError());
  bytes = index.cub_temp_bytes;
  cudaCheck(cub::DeviceRadixSort::SortPairs(index.cub_temp, bytes, tokens, index.sorted_tokens, index.positions,
                                            index.order, N, 0, bits, stream));
  group_index_kernel<<<1, GROUP_INDEX_THREADS, 0, stream>>>(index.group_start, index.group_token,
                                                             index.device_groups, index.sorted_tokens, N);
  cudaCheck(cudaGetLastError());
}

void embedding_backward(float* dtable, const bf16* dout, const EmbeddingGradIndex& index, int C, cudaStream_t stream) {
  check_channels(C, "embedding_backward");
  check_aligned16(dtable, "embedding_backward", "dtable");
  check_aligned16(dout, "embedding_backward", "dout");
  if (index.groups == 0) return;
  const int block = 128;
  dim3 grid(index.groups, ceil_div(C / 8, block));
  embedding_backward_kernel<<<grid, block, 0, stream>>>(dtable, dout, index.order, index.group_start,
                                                        index.group_token,
                                                        index.device_groups_valid ? index.device_groups : nullptr, C);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
