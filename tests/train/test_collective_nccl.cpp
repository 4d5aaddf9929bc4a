// The NCCL backend (train/collective_nccl.h) on one GPU: W = 1 is all a single GPU allows (NCCL refuses two ranks
// on one device), so this checks that the communicator comes up, that every collective runs on device buffers of
// each element type and on host values, and the errors of a bad launch. Several ranks: dev/multi_gpu_check.sh.
#include <cuda_runtime.h>

#include <chrono>

#include "tests/gpu_test_util.h"
#include "tests/test_util.h"
#include "train/collective_nccl.h"

namespace stapo {
namespace {

template <typename T>
std::vector<T> round_trip(Collective& ranks, const std::vector<T>& host, ElementType type,
                          void (Collective::*op)(void*, size_t, ElementType, void*)) {
  const size_t n = host.size(), room = ranks.buffer_elements(n);
  T* dev = nullptr;
  EXPECT_EQ(cudaMalloc(&dev, room * sizeof(T)), cudaSuccess);
  cudaMemcpy(dev, host.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  (ranks.*op)(dev, n, type, stream);
  ranks.synchronize(stream);
  std::vector<T> out(n);
  cudaMemcpy(out.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost);
  cudaStreamDestroy(stream);
  cudaFree(dev);
  return out;
}

TEST(CollectiveNccl, OneRankRunsEveryCollective) {
  STAPO_REQUIRE_GPU();
  const std::unique_ptr<Collective> ranks = collective_nccl(DistributedEnv{}, NcclOptions{});
  EXPECT_STREQ(ranks->backend(), "nccl");
  EXPECT_EQ(ranks->buffer_elements(1001), 1001u);
  const std::vector<float> f = test::random_normal(1001, 1.f);
  std::vector<double> d(f.begin(), f.end());
  std::vector<uint16_t> b(f.size());
  for (size_t i = 0; i < b.size(); i++) b[i] = uint16_t(i * 7919);  // bit patterns: a sum over one rank keeps them
  for (auto op : {&Collective::all_reduce, &Collective::reduce_scatter, &Collective::all_gather}) {
    EXPECT_EQ(round_trip(*ranks, f, ElementType::f32, op), f);
    EXPECT_EQ(round_trip(*ranks, d, ElementType::f64, op), d);
    const std::vector<uint16_t> bf = round_trip(*ranks, b, ElementType::bf16, op);
    for (size_t i = 0; i < b.size(); i++) {  // a NaN pattern may come back as another NaN
      if ((b[i] & 0x7f80) != 0x7f80) {
        ASSERT_EQ(bf[i], b[i]) << "element " << i;
      }
    }
  }
  double h[3] = {1.5, -2, 1e300};
  ranks->all_reduce_host(h, 3, ReduceOp::sum);
  EXPECT_EQ(h[0], 1.5);
  EXPECT_EQ(h[2], 1e300);
  ranks->all_reduce_host(h, 3, ReduceOp::max);
  EXPECT_EQ(h[1], -2);
  EXPECT_EQ(ranks->all_gather_host({3, 4, 5}), (std::vector<double>{3, 4, 5}));
  EXPECT_TRUE(ranks->all_gather_host({}).empty());
  char text[6] = "hello";
  ranks->broadcast_host(text, 6, 0);
  EXPECT_STREQ(text, "hello");
  ranks->barrier();
}

DistributedEnv launched(int rank, int world, int local_rank) {
  DistributedEnv e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = local_rank;
  e.launcher = "slurm";
  e.job_id = "nccl-test";
  return e;
}

// Without MPI, a rank other than 0 waits for rank 0's file: here no rank 0 comes, and it says so in time.
TEST(CollectiveNccl, BadLaunchesAreRefusedWithTheirReason) {
  STAPO_REQUIRE_GPU();
  std::string msg = test::error_message([] { collective_nccl(launched(0, 1, 999), NcclOptions{}); });
  EXPECT_NE(msg.find("local rank 999"), std::string::npos) << msg;
  msg = test::error_message([] { collective_nccl(launched(1, 2, 0), NcclOptions{}); });
  EXPECT_NE(msg.find("--rendezvous DIR"), std::string::npos) << msg;
  test::TempDir dir;
  NcclOptions options;
  options.rendezvous_dir = dir.path;
  options.timeout_s = 0.5;
  const auto start = std::chrono::steady_clock::now();
  msg = test::error_message([&] { collective_nccl(launched(1, 2, 0), options); });
  EXPECT_NE(msg.find("rank 1 of 2 waited 0.5 s for rank 0's rendezvous file"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
}

}  // namespace
}  // namespace stapo
