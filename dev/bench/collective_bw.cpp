// collective_bw: the bus bandwidth of ZeRO-1's two collectives on this machine's GPUs, through our NCCL backend
// (train/collective_nccl.h), one process per GPU:
//   mpirun -np 8 build-gpu/dev/bench/collective_bw [--elements N] [--iters K]
// For each of reduce-scatter (fp32, the gradients) and all-gather (bf16, the weights) of a buffer of N elements:
// the median time of K runs after 3 warm-ups, algorithm bandwidth = bytes / time and bus bandwidth = algbw ·
// (W − 1) / W (the bytes each GPU sends in a ring, nccl-tests' convention), printed by rank 0 as one JSON line
// each. docs/distributed.md compares them with the scaling model's assumptions.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "common/cli.h"
#include "train/collective_nccl.h"

int main(int argc, char** argv) {
  CLI::App app{"collective_bw: reduce-scatter and all-gather bus bandwidth over this job's GPUs (NCCL)"};
  app.name("collective_bw");
  size_t elements = size_t(1) << 28;  // 1 GiB of fp32 gradients: a 268 M-parameter bucket
  int iters = 10;
  std::string rendezvous;
  app.add_option("--elements", elements, "elements per buffer")->check(CLI::Range(size_t(1), size_t(1) << 34));
  app.add_option("--iters", iters, "timed runs (the median is reported)")->check(CLI::Range(1, 1000));
  app.add_option("--rendezvous", rendezvous, "without MPI: a directory every rank sees, for the NCCL id");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    stapo::NcclOptions options;
    options.rendezvous_dir = rendezvous;
    const std::unique_ptr<stapo::Collective> ranks = stapo::collective_nccl(stapo::distributed_env(), options);
    const int W = ranks->world_size();
    void* buffer = nullptr;
    const size_t room = ranks->buffer_elements(elements);
    STAPO_CHECK(cudaMalloc(&buffer, room * 4) == cudaSuccess, "cudaMalloc of ", room * 4, " bytes failed");
    cudaMemset(buffer, 0, room * 4);
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    for (stapo::ElementType type : {stapo::ElementType::f32, stapo::ElementType::bf16}) {
      const bool scatter = type == stapo::ElementType::f32;
      std::vector<double> seconds;
      for (int i = 0; i < iters + 3; i++) {
        ranks->barrier();
        const auto start = std::chrono::steady_clock::now();
        if (scatter) ranks->reduce_scatter(buffer, elements, type, stream);
        else ranks->all_gather(buffer, elements, type, stream);
        ranks->synchronize(stream);
        if (i >= 3) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(seconds.begin(), seconds.end());
      double median = seconds[seconds.size() / 2];
      ranks->all_reduce_host(&median, 1, stapo::ReduceOp::max);  // the slowest rank's
      const double bytes = double(elements) * double(stapo::element_size(type));
      const double algbw = bytes / median / 1e9;
      if (ranks->rank() == 0)
        printf("{\"op\": \"%s\", \"dtype\": \"%s\", \"ranks\": %d, \"bytes\": %.0f, \"median_ms\": %.3f, "
               "\"algbw_GBps\": %.1f, \"busbw_GBps\": %.1f}\n",
               scatter ? "reduce_scatter" : "all_gather", scatter ? "f32" : "bf16", W, bytes, median * 1e3, algbw,
               algbw * double(W - 1) / double(W));
    }
    cudaStreamDestroy(stream);
    cudaFree(buffer);
  });
}
