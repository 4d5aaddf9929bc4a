// Data parallel for the CUDA engine (train/cuda_engine.h): one process per GPU, the collectives of
// train/collective.h on device buffers (the NCCL backend, train/collective_nccl.h), the CPU engine's scheme
// (train/cpu_engine.h, docs/distributed.md) on the device:
//   every rank holds the whole bf16 model and the whole fp32 gradient buffer and runs its share of the step's pairs
//   (the trainer passes the step's global normalisers, so the gradients sum to one process's);
//   optimizer_step: the gradients are reduce-scattered (ZeRO-1) or all-reduced, in one call over the whole
//   buffer after the step's last backward (not per layer, not overlapped with the backward);
//   each rank adds the squares of its shard_range to the norm's GRAD_NORM_BLOCKS partials, and one all-reduce of
//   those partials and the non-finite-loss flag gives every rank the same norm, clip factor and decision;
//   ZeRO-1: each rank's AdamW updates its shard_range with master weights and moments for that range only, then the
//   bf16 weights are all-gathered. Without ZeRO-1 every rank updates everything.
// The buffers' layout (model/params.h's offsets, padded by CudaModel to a multiple of W × 128 elements) makes every
// shard equal and 128-element aligned. Checkpoints gather the shards to rank 0 (gather_to_host) and a resume reads
// its own range of the files, so a checkpoint does not depend on the world size; stochastic rounding is keyed by
// the element's index in its tensor (model/ops/adamw.h's AdamWState::index_base), so neither does an update.
// Without a collective (one process) the same object describes the whole buffer and every reduction is a no-op.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "train/collective.h"  // defines: Collective, ShardRange

namespace stapo {

class CudaZero {
 public:
  // ranks: the job (null: one process), kept by reference; zero1: shard the optimizer (else all-reduce);
  // buffer_elements: the model's buffers (a multiple of shards(ranks) × the alignment). Runs no collective, so a
  // rank may build an engine alone (the reference pass runs on rank 0 only).
  CudaZero(Collective* ranks, bool zero1, size_t buffer_elements, cudaStream_t stream);
  CudaZero(const CudaZero&) = delete;
  CudaZero& operator=(const CudaZero&) = delete;

  static int shards(const Collective* ranks) { return ranks ? ranks->world_size() : 1; }
  Collective* ranks() const { return ranks_; }
  bool writer() const { return !ranks_ || ranks_->rank() == 0; }  // the rank that writes checkpoints
  // The buffer range whose master weights and moments this rank holds and updates (index 0 of those arrays is
  // updates().begin): its shard_range under ZeRO-1, else the whole buffer.
  const ShardRange& updates() const { return updates_; }
  bool holds_whole() const { return updates_.count == elements_; }
  std::string description() const;  // for logs; "" for one process

  // On the stream, in this order per optimizer step. grads (buffer_elements): Σ over ranks, of updates() at least.
  void reduce_gradients(float* grads);
  // Adds this rank's part of Σ g² (its shard_range) into partials (GRAD_NORM_BLOCKS + 1 floats: the last is
  // scratch), then sums partials and *nonfinite_loss (int, 0 or 1) over ranks: grad_norm_finish reads both.
  void norm_partials(float* partials, const float* grads, int* nonfinite_loss);
  void gather_params(__nv_bfloat16* params);  // ZeRO-1: every rank's updated range to every rank
  // The host waits for `event` on the stream. Under data parallel it waits for the whole stream through the
  // collective's bounded wait instead: a peer that never reaches a collective then ends the job with a message
  // rather than hanging this rank (the update after `event` is then waited for too; the next step needs it anyway).
  void wait(cudaEvent_t event);

  // Collective (every rank calls it; waits for the stream): the whole buffer-layout array on the writer, from each
  // rank's `mine` (device, updates().count floats), copied through the host in chunks so that no rank needs a
  // second whole buffer on its device. Other ranks get an empty vector.
  std::vector<float> gather_to_host(const float* mine);

 private:
  Collective* ranks_;
  bool zero1_;
  size_t elements_;
  ShardRange updates_, norm_part_;
  cudaStream_t stream_;
};

}  // namespace stapo
