// kernels/staging.cu: pinned double-buffered uploads.
#include <memory>

#include "kernels/staging.h"
#include "tests/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace stapo::test {
namespace {

// Uploads through the pinned double buffer arrive in order and intact, also when more uploads than buffers are
// queued behind work that keeps the stream busy, and when a buffer has to grow.
TEST(KernelStaging, UploadsArriveIntact) {
  STAPO_REQUIRE_GPU();
  cudaStream_t stream;
  cudaCheck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  HostStaging staging;
  const size_t n = 1 << 16;
  DeviceArray<float> busy(1 << 24);  // the stream's earlier work: memsets of 64 MB
  std::vector<std::unique_ptr<DeviceArray<int32_t>>> dst;
  std::vector<std::vector<int32_t>> want;
  for (int k = 0; k < 6; ++k) {
    const size_t size = n * (1 + k % 3);  // the third upload is larger than the first: buffers grow
    std::vector<int32_t> a(size), b(7);
    for (size_t i = 0; i < size; ++i) a[i] = (int32_t)(i * 31 + k);
    for (size_t i = 0; i < b.size(); ++i) b[i] = (int32_t)(-k - (int)i);
    dst.push_back(std::make_unique<DeviceArray<int32_t>>(size));
    dst.push_back(std::make_unique<DeviceArray<int32_t>>(b.size()));
    cudaCheck(cudaMemsetAsync(busy.get(), k, busy.size() * sizeof(float), stream));
    staging.upload({{dst[dst.size() - 2]->get(), a.data(), a.size() * sizeof(int32_t)},
                    {dst.back()->get(), b.data(), b.size() * sizeof(int32_t)}},
                   stream);
    want.push_back(a);
    want.push_back(b);
    a.assign(a.size(), -1);  // the host's vectors may change as soon as upload returns
    b.assign(b.size(), -1);
  }
  cudaCheck(cudaStreamSynchronize(stream));
  for (size_t i = 0; i < dst.size(); ++i) EXPECT_EQ(dst[i]->download(), want[i]) << "upload piece " << i;
  cudaCheck(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace stapo::test
