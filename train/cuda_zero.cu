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

CudaZero::CudaZero(Collective* ranks, bool zero1, size_t buffer_elements, cudaStream_t stream)
    : ranks_(ranks), zero1_(zero1), elements_(buffer_elements), stream_(stream) {
  const int W = shards(ranks);
  STAPO_CHECK(buffer_elements % size_t(W) == 0, "CudaZero: the model's buffers (", buffer_elements,
              " elements) are not padded to a multiple of the world size ", W, " (CudaModelOptions::shards)");
  STAPO_CHECK(!ranks || ranks->buffer_elements(buffer_elements) == buffer_elements, "CudaZero: the ", ranks->backend(),
              " backend needs ", ranks->buffer_elements(buffer_elements), " elements for a buffer of ",
              buffer_elements);
  norm_part_ = ranks ? shard_range(buffer_elements, ranks->rank(), W) : ShardRange{0, buffer_elements};
  updates_ = ranks && zero1 ? norm_part_ : ShardRange{0, buffer_elements};
}

std::string CudaZero::description() const {
  if (!ranks_) return "";
  return cat(", data parallel over ", ranks_->world_size(), " ranks (", ranks_->backend(), ")",
             zero1_ ? cat(", ZeRO-1: rank ", ranks_->rank(), " updates elements [", updates_.begin, ", ",
                          updates_.end(), ") of ", elements_)
                    : std::string(", every rank updates every parameter"));
}

void CudaZero::reduce_gradients(float* grads) {
  if (!ranks_) return;
  if (zero1_)
    ranks_->reduce_scatter(grads, elements_, ElementType::f32, stream_);
  else
    ranks_->all_reduce(grads, elements_, ElementType::f32, stream_);
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
