// AdamW over compact optimizer state (math and layouts in kernels/adamw_compact.h and model/ops/adamw.h).
#include <algorithm>
#include <climits>

#include "kernels/adamw_compact.h"
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/staging.h"

namespace stapo {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = kQuantBlock / kThreads;
static_assert(kPerThread * kThreads == kQuantBlock && kThreads == kQuantCodes,
              "one thread per map entry when the maps are staged in shared memory");

// The two maps' values, passed by value (2 KiB of kernel parameters); the bounds are derived on the device with
// the twin's own formula (quant_bound), so both sides encode against the same floats.
struct QuantValues {
  float m[kQuantCodes];
  float v[kQuantCodes];
};

__device__ inline float grad_value(const float* g, size_t i) { return g[i]; }
__device__ inline float grad_value(const bf16* g, size_t i) { return __bfloat162float(g[i]); }

// ---- kernel ----

// The maps' values and bounds in shared memory, for 8-bit moments (every thread of the block calls it).
template <MomentKind Q>
__device__ inline void stage_maps(const QuantValues& maps, float* m_value, float* v_value, float* m_bound,
                                  float* v_bound) {
  if (Q != MomentKind::q8) return;
  m_value[threadIdx.x] = maps.m[threadIdx.x];
  v_value[threadIdx.x] = maps.v[threadIdx.x];
  __syncthreads();
  if (threadIdx.x < kQuantCodes - 1) {
    m_bound[threadIdx.x] = quant_bound(m_value, threadIdx.x);
    v_bound[threadIdx.x] = quant_bound(v_value, threadIdx.x);
  }
  __syncthreads();
}

// Quantisation block `block` of one tensor: the per-tensor kernel's and the multi-tensor kernel's block, one code.
template <typename G, MasterKind K, MomentKind Q>
__device__ inline void adamw_block(const AdamWState& s, const G* grads, const AdamWStep<float>& step, float clip,
                                   uint32_t seed, size_t block, const float* m_value, const float* v_value,
                                   const float* m_bound, const float* v_bound) {
  const size_t begin = block * kQuantBlock;
  float m_old_absmax = 0.0f, v_old_absmax = 0.0f;
  if (Q == MomentKind::q8) {
    m_old_absmax = s.m_absmax[block];
    v_old_absmax = s.v_absmax[block];
  }
  // Every read of the thread's elements first, then the updates and stores: read and update element by element,
  // a thread had one element's reads in flight at a time (a store may alias a later read), and the step ran at
  // about 72% of the H200's bandwidth.
  AdamWInputs in[kPerThread];
  float g[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const size_t i = begin + threadIdx.x + (size_t)k * kThreads;
    if (i >= s.n) continue;
    in[k] = adamw_read<K, Q>(s, i, m_value, v_value, m_old_absmax, v_old_absmax);
    g[k] = grad_value(grads, i) * clip;
  }
  float m_new[kPerThread], v_new[kPerThread], m_absmax = 0.0f, v_absmax = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const size_t i = begin + threadIdx.x + (size_t)k * kThreads;
    m_new[k] = v_new[k] = 0.0f;
    if (i >= s.n) continue;
    adamw_write<K, Q>(s, i, g[k], in[k], step, seed, m_new[k], v_new[k]);
    m_absmax = fmaxf(m_absmax, fabsf(m_new[k]));
    v_absmax = fmaxf(v_absmax, v_new[k]);
  }
  if (Q == MomentKind::fp32) return;
  // Every thread reaches the reductions: none returned above when moments are 8-bit.
  m_absmax = block_max(m_absmax);
  v_absmax = block_max(v_absmax);
  if (threadIdx.x == 0) {
    s.m_absmax[block] = m_absmax;
    s.v_absmax[block] = v_absmax;
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const size_t i = begin + threadIdx.x + (size_t)k * kThreads;
    if (i < s.n) adamw_encode(s, i, m_new[k], v_new[k], m_bound, v_bound, m_absmax, v_absmax);
  }
}

template <typename G, MasterKind K, MomentKind Q>
__global__ void __launch_bounds__(kThreads) adamw_compact_kernel(AdamWState s, const G* grads, AdamWStep<float> step,
                                                                 const float* clip_scale, const int* apply,
                                                                 uint32_t seed, QuantValues maps) {
  if (apply && *apply == 0) return;  // the same for every thread of every block
  __shared__ float m_value[kQuantCodes], v_value[kQuantCodes], m_bound[kQuantCodes - 1], v_bound[kQuantCodes - 1];
  stage_maps<Q>(maps, m_value, v_value, m_bound, v_bound);
  adamw_block<G, K, Q>(s, grads, step, clip_scale ? *clip_scale : 1.0f, seed, blockIdx.x, m_value, v_value, m_bound,
                       v_bound);
}

// Block b belongs to the last tensor whose first_block ≤ b (the table holds no empty tensor).
template <MasterKind K, MomentKind Q>
__global__ void __launch_bounds__(kThreads) adamw_many_kernel(const AdamWTensor* table, int tensors,
                                                              const float* clip_scale, const int* apply,
                                                              QuantValues maps) {
  if (apply && *apply == 0) return;
  __shared__ float m_value[kQuantCodes], v_value[kQuantCodes], m_bound[kQuantCodes - 1], v_bound[kQuantCodes - 1];
  stage_maps<Q>(maps, m_value, v_value, m_bound, v_bound);
  const size_t b = blockIdx.x;
  int lo = 0, hi = tensors - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].first_block <= b) lo = mid;
    else hi = mid - 1;
  }
  const AdamWTensor& t = table[lo];
  const float clip = clip_scale ? *clip_scale : 1.0f;
  if (t.grads)
    adamw_block<float, K, Q>(t.state, t.grads, t.step, clip, t.seed, b - t.first_block, m_value, v_value, m_bound,
                             v_bound);
  else
    adamw_block<bf16, K, Q>(t.state, t.grads_bf16, t.step, clip, t.seed, b - t.first_block, m_value, v_value,
                            m_bound, v_bound);
}

__global__ void adamw_init_kernel(AdamWState s, MasterKind master, const float* x) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < s.n; i += (size_t)gridDim.x * blockDim.x) {
    const float p = x[i];
    s.weights[i] = split_high(p);
    if (master == MasterKind::fp32) s.master[i] = p;
    if (master == MasterKind::split) s.low[i] = split_low(p);
  }
}

// ---- launcher ----

template <typename G, MasterKind K, MomentKind Q>
void launch(const AdamWState& s, const G* grads, const AdamWStep<float>& step, const float* clip_scale,
            const int* apply, uint32_t seed, const QuantValues& maps, cudaStream_t stream) {
  adamw_compact_kernel<G, K, Q><<<(unsigned)quant_blocks(s.n), kThreads, 0, stream>>>(s, grads, step, clip_scale,
                                                                                     apply, seed, maps);
  cudaCheck(cudaGetLastError());
}

template <typename G, MasterKind K>
void launch(const AdamWState& s, MomentKind moments, const G* grads, const AdamWStep<float>& step,
            const float* clip_scale, const int* apply, uint32_t seed, const QuantValues& maps, cudaStream_t stream) {
  if (moments == MomentKind::q8)
    launch<G, K, MomentKind::q8>(s, grads, step, clip_scale, apply, seed, maps, stream);
  else
    launch<G, K, MomentKind::fp32>(s, grads, step, clip_scale, apply, seed, maps, stream);
}

const QuantValues& quant_values() {
  static const QuantValues values = [] {
    QuantValues q;
    const QuantMap m = quant_map(true), v = quant_map(false);
    for (int i = 0; i < kQuantCodes; ++i) {
      q.m[i] = m.value[i];
      q.v[i] = v.value[i];
    }
    return q;
  }();
  return values;
}

template <typename G>
void update(const AdamWState& s, MasterKind master, MomentKind moments, const G* grads, const AdamWStep<float>& step,
            const float* clip_scale, const int* apply, uint32_t seed, cudaStream_t stream) {
  const char* op = "adamw_compact_update";
  adamw_state_check(s, master, moments, step, true, op);
  STAPO_CHECK(grads != nullptr, op, ": gradients are required");
  STAPO_CHECK(quant_blocks(s.n) <= (size_t)INT_MAX, op, ": ", s.n, " elements exceed the grid (",
              (size_t)INT_MAX * kQuantBlock, " at most)");
  if (s.n == 0) return;
  const QuantValues& maps = quant_values();
  switch (master) {
    case MasterKind::fp32:
      return launch<G, MasterKind::fp32>(s, moments, grads, step, clip_scale, apply, seed, maps, stream);
    case MasterKind::split:
      return launch<G, MasterKind::split>(s, moments, grads, step, clip_scale, apply, seed, maps, stream);
    case MasterKind::none:
      return launch<G, MasterKind::none>(s, moments, grads, step, clip_scale, apply, seed, maps, stream);
  }
}

template <MasterKind K>
void launch_many(const AdamWTensor* table, int tensors, size_t blocks, MomentKind moments, const float* clip_scale,
                 const int* apply, const QuantValues& maps, cudaStream_t stream) {
  if (moments == MomentKind::q8)
    adamw_many_kernel<K, MomentKind::q8><<<(unsigned)blocks, kThreads, 0, stream>>>(table, tensors, clip_scale, apply,
                                                                                   maps);
  else
    adamw_many_kernel<K, MomentKind::fp32><<<(unsigned)blocks, kThreads, 0, stream>>>(table, tensors, clip_scale,
                                                                                     apply, maps);
  cudaCheck(cudaGetLastError());
}

}  // namespace

AdamWTensorTable::AdamWTensorTable() : staging_(std::make_unique<HostStaging>()) {}

AdamWTensorTable::~AdamWTensorTable() {
  if (device_) cudaFree(device_);  // a destructor must not throw
}

AdamWTensor* AdamWTensorTable::device(size_t tensors, cudaStream_t stream) {
  if (tensors > capacity_) {
    cudaCheck(cudaStreamSynchronize(stream));  // the old table may still be read
    if (device_) cudaCheck(cudaFree(device_));
    device_ = nullptr;
    cudaCheck(cudaMalloc(&device_, tensors * sizeof(AdamWTensor)));
    capacity_ = tensors;
  }
  return device_;
}

AdamWTableUpload adamw_compact_upload_many(AdamWTensorTable& table, std::vector<AdamWTensor>& tensors,
                                           MasterKind master, MomentKind moments, cudaStream_t stream) {
  const char* op = "adamw_compact_update_many";
  std::vector<AdamWTensor> used;
  size_t blocks = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    AdamWTensor& t = tensors[i];
    t.first_block = blocks;
    if (t.state.n == 0) continue;  // nothing to update: an empty tensor's pointers may be null
    adamw_state_check(t.state, master, moments, t.step, true, op);
    STAPO_CHECK((t.grads != nullptr) != (t.grads_bf16 != nullptr), op, ": tensor ", i,
                " needs exactly one of grads (fp32) and grads_bf16");
    blocks += quant_blocks(t.state.n);
    used.push_back(t);
  }
  STAPO_CHECK(blocks <= (size_t)INT_MAX, op, ": ", blocks, " blocks of ", kQuantBlock, " elements exceed the grid");
  STAPO_CHECK(used.size() <= (size_t)INT_MAX, op, ": ", used.size(), " tensors");
  AdamWTableUpload upload;
  upload.master = master;
  upload.moments = moments;
  if (used.empty()) return upload;
  AdamWTensor* device = table.device(used.size(), stream);
  table.staging_->upload({{device, used.data(), used.size() * sizeof(AdamWTensor)}}, stream);
  upload.device = device;
  upload.tensors = (int)used.size();
  upload.blocks = blocks;
  return upload;
}

void adamw_compact_launch_many(const AdamWTableUpload& u, const float* clip_scale, const int* apply,
                               cudaStream_t stream) {
  if (u.tensors == 0) return;
  const QuantValues& maps = quant_values();
  switch (u.master) {
    case MasterKind::fp32:
      return launch_many<MasterKind::fp32>(u.device, u.tensors, u.blocks, u.moments, clip_scale, apply, maps, stream);
    case MasterKind::split:
      return launch_many<MasterKind::split>(u.device, u.tensors, u.blocks, u.moments, clip_scale, apply, maps, stream);
    case MasterKind::none:
      return launch_many<MasterKind::none>(u.device, u.tensors, u.blocks, u.moments, clip_scale, apply, maps, stream);
  }
}

void adamw_compact_update_many(AdamWTensorTable& table, std::vector<AdamWTensor>& tensors, MasterKind master,
                               MomentKind moments, const float* clip_scale, const int* apply, cudaStream_t stream) {
  adamw_compact_launch_many(adamw_compact_upload_many(table, tensors, master, moments, stream), clip_scale, apply,
                            stream);
}

void adamw_compact_init(const AdamWState& state, MasterKind master, const float* x, cudaStream_t stream) {
  STAPO_CHECK(state.weights && x, "adamw_compact_init: state.weights and x are required");
  STAPO_CHECK(master != MasterKind::fp32 || state.master, "adamw_compact_init: MasterKind::fp32 needs state.master");
  STAPO_CHECK(master != MasterKind::split || state.low, "adamw_compact_init: MasterKind::split needs state.low");
  if (state.n == 0) return;
  const size_t blocks = std::min<size_t>((state.n + kThreads - 1) / kThreads, 65536);  // grid-stride beyond
  adamw_init_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(state, master, x);
  cudaCheck(cudaGetLastError());
}

void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const float* grads,
                          const AdamWStep<float>& step, const float* clip_scale, const int* apply, uint32_t seed,
                          cudaStream_t stream) {
  update(state, master, moments, grads, step, clip_scale, apply, seed, stream);
}

void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const bf16* grads,
                          const AdamWStep<float>& step, const float* clip_scale, const int* apply, uint32_t seed,
                          cudaStream_t stream) {
  update(state, master, moments, grads, step, clip_scale, apply, seed, stream);
}

}  // namespace stapo
