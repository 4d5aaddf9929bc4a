// Data parallel for the CUDA engine (train/cuda_zero.h).
#include "train/cuda_zero.h"

#include <algorithm>

#include "common/error.h"
#include "kernels/cuda_common.h"
#include "kernels/grad_norm.h"

namespace stapo {

namespace {

// The non-finite-loss flag travels as a float beside the norm's partials: one all-reduce for both.
__global__ void flag_to_float(float* out, const int* flag) { *out = *flag != 0 ? 1.0f : 0.0f; }
__global__ void float_to_flag(int* flag, const float* sum) { *flag = *sum > 0.0f ? 1 : 0; }

// Host bytes moved per broadcast by gather_to_host.
constexpr size_t kGatherChunkFloats = size_t(16) << 20;  // 64 MiB

}  // namespace

CudaZero::CudaZero(Collective* ranks, bool zero1, bool overlap, size_t buffer_elements,
                   std::vector<size_t> bucket_bounds, cudaStream_t stream)
    : ranks_(ranks), zero1_(zero1), elements_(buffer_elements), stream_(stream) {
  const int W = shards(ranks);
  STAPO_CHECK(buffer_elements % size_t(W) == 0, "CudaZero: the model's buffers (", buffer_elements,
              " elements) are not padded to a multiple of the world size ", W, " (CudaModelOptions::shards)");
  STAPO_CHECK(!ranks || ranks->buffer_elements(buffer_elements) == buffer_elements, "CudaZero: the ", ranks->backend(),
              " backend needs ", ranks->buffer_elements(buffer_elements), " elements for a buffer of ",
              buffer_elements);
  norm_part_ = ranks ? shard_range(buffer_elements, ranks->rank(), W) : ShardRange{0, buffer_elements};
  updates_ = ranks && zero1 ? norm_part_ : ShardRange{0, buffer_elements};
  if (!ranks || !overlap) return;
  STAPO_CHECK(bucket_bounds.size() >= 2 && bucket_bounds.front() == 0 && bucket_bounds.back() == buffer_elements,
              "CudaZero: the gradient buckets do not cover the buffer of ", buffer_elements, " elements");
  for (size_t b = 0; b + 1 < bucket_bounds.size(); ++b) {
    buckets_.push_back({bucket_bounds[b], bucket_bounds[b + 1] - bucket_bounds[b]});
    pieces_.push_back(zero1 ? reduce_pieces(buckets_.back(), buffer_elements, W) : std::vector<ReducePiece>{});
  }
  // The highest priority: the reductions' kernels are scheduled ahead of the backward's when both are ready.
  int lowest = 0, highest = 0;
  cudaCheck(cudaDeviceGetStreamPriorityRange(&lowest, &highest));
  cudaCheck(cudaStreamCreateWithPriority(&comm_, cudaStreamNonBlocking, highest));
  cudaCheck(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  cudaCheck(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
}

CudaZero::~CudaZero() {
  if (!comm_) return;
  cudaStreamSynchronize(comm_);  // a destructor does not throw: errors here surface at the next CUDA call, if any
  cudaEventDestroy(ready_);
  cudaEventDestroy(reduced_);
  cudaStreamDestroy(comm_);
}

std::string CudaZero::description() const {
  if (!ranks_) return "";
  return cat(", data parallel over ", ranks_->world_size(), " ranks (", ranks_->backend(), ")",
             zero1_ ? cat(", ZeRO-1: rank ", ranks_->rank(), " updates elements [", updates_.begin, ", ",
                          updates_.end(), ") of ", elements_)
                    : std::string(", every rank updates every parameter"),
             buckets_.empty() ? "" : cat(", gradients reduced in ", buckets_.size(), " buckets during the backward"));
}

void CudaZero::begin_backward(bool last) {
  STAPO_CHECK(issued_ == 0, "CudaEngine: a backward after the step's last one (StepScale::last), whose gradients are "
              "already being reduced over the ranks: mark only the last micro-batch of a step, then optimizer_step");
  armed_ = last && !buckets_.empty();
}

void CudaZero::bucket_ready(int bucket, float* grads) {
  if (!armed_) return;
  const int expected = int(buckets_.size()) - 1 - issued_;
  STAPO_CHECK(bucket == expected, "CudaZero: the backward completed gradient bucket ", bucket, " where ", expected,
              " was due: every rank must reduce the buckets in one order (train/cuda_model.h's set_grads_ready)");
  cudaCheck(cudaEventRecord(ready_, stream_));
  cudaCheck(cudaStreamWaitEvent(comm_, ready_, 0));
  reduce_bucket(bucket, grads, comm_);
  issued_++;
}

void CudaZero::end_backward() {
  if (!armed_) return;
  armed_ = false;
  STAPO_CHECK(issued_ == int(buckets_.size()), "CudaZero: the backward completed ", issued_, " of ", buckets_.size(),
              " gradient buckets");
  cudaCheck(cudaEventRecord(reduced_, comm_));
}

void CudaZero::reduce_bucket(int bucket, float* grads, cudaStream_t stream) {
  const ShardRange& range = buckets_[size_t(bucket)];
  if (range.count == 0) return;  // the same on every rank
  if (zero1_)
    ranks_->reduce(grads, pieces_[size_t(bucket)], ElementType::f32, stream);
  else
    ranks_->all_reduce(grads + range.begin, range.count, ElementType::f32, stream);
}

void CudaZero::reduce_gradients(float* grads) {
  if (!ranks_) return;
  if (buckets_.empty()) {
    if (zero1_)
      ranks_->reduce_scatter(grads, elements_, ElementType::f32, stream_);
    else
      ranks_->all_reduce(grads, elements_, ElementType::f32, stream_);
    return;
  }
  STAPO_CHECK(!armed_, "CudaZero::reduce_gradients inside a backward");
  if (issued_ == int(buckets_.size())) {
    cudaCheck(cudaStreamWaitEvent(stream_, reduced_, 0));
  } else {  // no last backward on this rank this step: the same collectives, in the same order, now
    STAPO_CHECK(issued_ == 0, "CudaZero: ", issued_, " of ", buckets_.size(), " gradient buckets reduced");
    for (int b = int(buckets_.size()) - 1; b >= 0; --b) reduce_bucket(b, grads, stream_);
  }
  issued_ = 0;
}

void CudaZero::norm_partials(float* partials, const float* grads, int* nonfinite_loss) {
  grad_norm_accumulate(partials, grads + norm_part_.begin, norm_part_.count, false, stream_);
  if (!ranks_) return;
  float* flag = partials + GRAD_NORM_BLOCKS;
  flag_to_float<<<1, 1, 0, stream_>>>(flag, nonfinite_loss);
  cudaCheck(cudaGetLastError());
  ranks_->all_reduce(partials, GRAD_NORM_BLOCKS + 1, ElementType::f32, stream_);
  float_to_flag<<<1, 1, 0, stream_>>>(nonfinite_loss, flag);
  cudaCheck(cudaGetLastError());
}

void CudaZero::gather_params(__nv_bfloat16* params) {
  if (ranks_ && zero1_) ranks_->all_gather(params, elements_, ElementType::bf16, stream_);
}

void CudaZero::wait(cudaEvent_t event) {
  if (ranks_)
    ranks_->synchronize(stream_);
  else
    cudaCheck(cudaEventSynchronize(event));
}

std::vector<float> CudaZero::gather_to_host(const float* mine) {
  if (ranks_) ranks_->synchronize(stream_);  // the step's collectives first, with the bounded wait
  std::vector<float> out(writer() ? elements_ : 0);
  if (holds_whole() || !ranks_) {  // the writer has it all
    if (writer()) {
      cudaCheck(cudaMemcpyAsync(out.data(), mine, elements_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      cudaCheck(cudaStreamSynchronize(stream_));
    }
    return out;
  }
  std::vector<float> relay(writer() ? 0 : kGatherChunkFloats);
  for (int r = 0; r < ranks_->world_size(); ++r) {
    const ShardRange part = shard_range(elements_, r, ranks_->world_size());
    for (size_t at = 0; at < part.count; at += kGatherChunkFloats) {
      const size_t n = std::min(kGatherChunkFloats, part.count - at);
      float* chunk = writer() ? out.data() + part.begin + at : relay.data();  // the others relay through `relay`
      if (r == ranks_->rank()) {
        cudaCheck(cudaMemcpyAsync(chunk, mine + at, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        cudaCheck(cudaStreamSynchronize(stream_));
      }
      ranks_->broadcast_host(chunk, n * sizeof(float), r);
    }
  }
  return out;
}

}  // namespace stapo
