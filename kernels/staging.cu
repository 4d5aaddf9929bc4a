// Pinned double-buffered uploads (kernels/staging.h).
#include <cstdio>
#include <cstring>

#include "kernels/cuda_common.h"
#include "kernels/staging.h"

namespace stapo {

namespace {
constexpr size_t kPieceAlign = 16;
size_t align_up(size_t n) { return (n + kPieceAlign - 1) / kPieceAlign * kPieceAlign; }
}  // namespace

HostStaging::~HostStaging() {
  // A destructor must not throw: a failure here is reported and the rest released.
  for (Buffer& b : buffers_) {
    cudaError_t err = cudaSuccess;
    if (b.pending) err = cudaEventSynchronize(b.copied);
    if (err == cudaSuccess && b.copied) err = cudaEventDestroy(b.copied);
    if (err == cudaSuccess && b.host) err = cudaFreeHost(b.host);
    if (err != cudaSuccess) fprintf(stderr, "warning: releasing an upload buffer: %s\n", cudaGetErrorString(err));
  }
}

void HostStaging::upload(const std::vector<UploadPiece>& pieces, cudaStream_t stream) {
  size_t total = 0;
  for (const UploadPiece& p : pieces) total += align_up(p.bytes);
  if (total == 0) return;
  Buffer& b = buffers_[next_];
  next_ ^= 1;
  if (b.pending) cudaCheck(cudaEventSynchronize(b.copied));  // the copies that read this buffer last are done
  b.pending = false;
  if (!b.copied) cudaCheck(cudaEventCreateWithFlags(&b.copied, cudaEventDisableTiming));
  if (total > b.bytes) {
    if (b.host) cudaCheck(cudaFreeHost(b.host));
    b.host = nullptr;
    b.bytes = 0;
    cudaCheck(cudaMallocHost(&b.host, 2 * total));  // headroom: batches vary in size
    b.bytes = 2 * total;
  }
  size_t at = 0;
  for (const UploadPiece& p : pieces) {
    if (p.bytes == 0) continue;
    std::memcpy(b.host + at, p.host, p.bytes);
    cudaCheck(cudaMemcpyAsync(p.device, b.host + at, p.bytes, cudaMemcpyHostToDevice, stream));
    at += align_up(p.bytes);
  }
  cudaCheck(cudaEventRecord(b.copied, stream));
  b.pending = true;
}

}  // namespace stapo
