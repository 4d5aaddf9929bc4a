// AdamW over a tensor's compact optimizer state (model/ops/adamw.h): fp32 or split master weights or bf16 weights
// only, fp32 or 8-bit block-wise moments (Dettmers et al., ICLR 2022), fp32 or bf16 gradients. The GPU twin of
// train/adamw.h's adamw_compact_update, bit for bit: both run model/ops/adamw.h's element functions in float.
//   g = grad · clip_scale;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//   p = p·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
// One block of 256 threads per quantisation block of kQuantBlock = 2048 elements (8 per thread, strided so that a
// warp's accesses are consecutive): it decodes m and v with the block's old absmax, updates them and the weight,
// then (8-bit) reduces the new absmax of |m| and of v over the block and encodes the moments with it.
// Layouts (n elements, 64-bit indices): state.weights (n) bf16 bit patterns (the model's __nv_bfloat16 buffer);
// state.master (n) fp32; state.low (n) int16; state.m, state.v (n) fp32; state.m_code, state.v_code (n) uint8;
// state.m_absmax, state.v_absmax (quant_blocks(n)) fp32; grads (n). clip_scale: one device float, or nullptr for
// 1. apply: one device int, 0 leaves everything untouched (a step whose norm or loss was not finite), or nullptr
// to always update. seed: MasterKind::none's stochastic rounding (hashed with the element's index in the tensor,
// state.index_base + i: a data-parallel rank's part of a tensor gets the bits the whole tensor's update would).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/staging.h"  // defines: HostStaging
#include "model/ops/adamw.h"  // defines: AdamWState, AdamWStep, MasterKind, MomentKind

namespace stapo {

void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments, const float* grads,
                          const AdamWStep<float>& step, const float* clip_scale, const int* apply, uint32_t seed,
                          cudaStream_t stream);
void adamw_compact_update(const AdamWState& state, MasterKind master, MomentKind moments,
                          const __nv_bfloat16* grads, const AdamWStep<float>& step, const float* clip_scale,
                          const int* apply, uint32_t seed, cudaStream_t stream);

// Many tensors in one launch (--adamw-multi-tensor): a table of tensors, each with its state, its gradients (fp32 or
// bf16), its step constants (weight decay differs by tensor) and its stochastic-rounding seed, uploaded with the
// launch; one grid over all their quantisation blocks, each block finding its tensor by binary search over the
// table's first blocks. Every block runs the per-tensor kernel's own block code, so the result is the per-tensor
// launches' bit for bit.
struct AdamWTensor {
  AdamWState state;
  const float* grads = nullptr;                // (state.n) one of the two
  const __nv_bfloat16* grads_bf16 = nullptr;   // (state.n)
  AdamWStep<float> step;
  uint32_t seed = 0;
  size_t first_block = 0;  // filled in by adamw_compact_upload_many
};

// A table uploaded for one launch (adamw_compact_upload_many below).
struct AdamWTableUpload {
  const AdamWTensor* device = nullptr;  // (tensors) the uploaded table; null when no tensor has elements
  int tensors = 0;
  size_t blocks = 0;  // quantisation blocks over all of them: the launch's grid
  MasterKind master = MasterKind::fp32;
  MomentKind moments = MomentKind::fp32;
};

// The table's device copy and its pinned staging; grows to the largest table seen.
class AdamWTensorTable {
 public:
  AdamWTensorTable();
  ~AdamWTensorTable();
  AdamWTensorTable(const AdamWTensorTable&) = delete;
  AdamWTensorTable& operator=(const AdamWTensorTable&) = delete;
  AdamWTensor* device(size_t tensors, cudaStream_t stream);  // room for `tensors` entries

 private:
  AdamWTensor* device_ = nullptr;
  size_t capacity_ = 0;
  std::unique_ptr<HostStaging> staging_;
  friend AdamWTableUpload adamw_compact_upload_many(AdamWTensorTable&, std::vector<AdamWTensor>&, MasterKind,
                                                    MomentKind, cudaStream_t);
};

// `tensors` with state.n = 0 are left out; each needs exactly one of grads, grads_bf16.
void adamw_compact_update_many(AdamWTensorTable& table, std::vector<AdamWTensor>& tensors, MasterKind master,
                               MomentKind moments, const float* clip_scale, const int* apply, cudaStream_t stream);

// adamw_compact_update_many in its two halves: the table's upload from the host (checked, through the pinned
// staging), then the launch, which reads device memory only and so may be captured into a CUDA graph
// (--cuda-graph, train/cuda_graph.h). Enqueue the launch before the table's next upload, which overwrites it.
AdamWTableUpload adamw_compact_upload_many(AdamWTensorTable& table, std::vector<AdamWTensor>& tensors,
                                           MasterKind master, MomentKind moments, cudaStream_t stream);
void adamw_compact_launch_many(const AdamWTableUpload& upload, const float* clip_scale, const int* apply,
                               cudaStream_t stream);

// The state of a tensor of fp32 weights x (state.n): state.weights = split_high(x) (bf16 rounded to nearest, ties
// away from zero: what every master kind's update writes), and state.master = x (fp32; x may be state.master
// itself) or state.low = split_low(x) (split). Moments are not touched (the caller zeroes them).
void adamw_compact_init(const AdamWState& state, MasterKind master, const float* x, cudaStream_t stream);

}  // namespace stapo
