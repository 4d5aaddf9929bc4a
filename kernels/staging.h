// Uploads from host vectors without making the host wait for the stream. cudaMemcpyAsync from pageable memory
// may wait for the stream's earlier work before it returns (the driver stages the copy); from pinned memory it
// only enqueues. HostStaging copies the pieces into one of two pinned buffers, enqueues their copies and records
// an event; before a buffer is written again the host waits for that event, i.e. for the stream to have reached
// the upload before last (so the host runs at most two uploads ahead, and the device never idles for it).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

namespace stapo {

struct UploadPiece {
  void* device;      // destination (device memory)
  const void* host;  // source (any host memory; read before upload returns)
  size_t bytes;
};

class HostStaging {
 public:
  HostStaging() = default;
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  // Enqueues the copies of every piece on `stream`, in order.
  void upload(const std::vector<UploadPiece>& pieces, cudaStream_t stream);

 private:
  struct Buffer {
    char* host = nullptr;  // pinned
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;  // recorded after this buffer's last copies
    bool pending = false;          // `copied` was recorded and not waited for
  };
  Buffer buffers_[2];
  int next_ = 0;
};

}  // namespace stapo
