// Data parallel for the CUDA engine (train/cuda_engine.h): one process per GPU, the collectives of
// train/collective.h on device buffers (the NCCL backend, train/collective_nccl.h), the CPU engine's scheme
// (train/cpu_engine.h, docs/distributed.md) on the device:
//   every rank holds the whole bf16 model and the whole fp32 gradient buffer and runs its share of the step's pairs
//   (the trainer passes the step's global normalisers, so the gradients sum to one process's);
//   the gradients are reduce-scattered (ZeRO-1) or all-reduced, by default in one call over the whole buffer in
//   optimizer_step; with overlap (--zero-overlap 1) bucket by bucket (train/memory_plan.h's grad_bucket_bounds: a
//   layer each, the embedding, the final norm and lm_head) during the step's last backward, on a second stream:
//   as the backward completes a bucket (CudaModel::set_grads_ready) an event on the compute stream lets the
//   communication stream reduce it while the backward goes on. ZeRO-1 reduces each bucket as reduce_pieces cuts it
//   at the shard boundaries, every piece to the rank whose shard holds it (NCCL: one group of ncclReduce per
//   bucket), so each rank ends with the same summed shard as the whole-buffer reduce-scatter leaves, and the shards,
//   AdamW and checkpoints are those of the default; without ZeRO-1 each bucket is all-reduced. optimizer_step's
//   stream waits for the communication stream before the norm;
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
  // overlap: reduce bucket by bucket during the step's last backward; bucket_bounds: grad_bucket_bounds of the
  // buffer (used with overlap only).
  CudaZero(Collective* ranks, bool zero1, bool overlap, size_t buffer_elements, std::vector<size_t> bucket_bounds,
           cudaStream_t stream);
  ~CudaZero();
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

  // Around each backward (CudaEngine::run_pairs): `last` says it is the step's last one (StepScale::last), whose
  // buckets bucket_ready reduces with overlap as the backward completes them (in the backward's order: L + 1, L,
  // ..., 0, checked, since every rank must issue the same collectives in the same order). A backward after the
  // step's reduction has begun is an error.
  void begin_backward(bool last);
  void bucket_ready(int bucket, float* grads);
  void end_backward();
  // On the stream, in this order per optimizer step. grads (buffer_elements): Σ over ranks, of updates() at least.
  // With overlap: waits for the buckets reduced during the backward, or (a rank whose step had no last backward:
  // no pairs, or a caller that does not mark it) reduces every bucket now, in the same order.
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
  void reduce_bucket(int bucket, float* grads, cudaStream_t stream);

  Collective* ranks_;
  bool zero1_;
  size_t elements_;
  ShardRange updates_, norm_part_;
  cudaStream_t stream_;
  // Overlap (data parallel only): the buckets, the communication stream, and this step's progress.
  std::vector<ShardRange> buckets_;               // empty without overlap
  std::vector<std::vector<ReducePiece>> pieces_;  // ZeRO-1: each bucket's reduce_pieces
  cudaStream_t comm_ = nullptr;
  cudaEvent_t ready_ = nullptr, reduced_ = nullptr;  // a bucket's writes on stream_; the buckets' reductions on comm_
  bool armed_ = false;  // inside the step's last backward
  int issued_ = 0;      // buckets reduced (or queued) since the last reduce_gradients
};

}  // namespace stapo
