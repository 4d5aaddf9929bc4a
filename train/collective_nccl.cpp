// The NCCL backend (train/collective_nccl.h). The communicator is non-blocking (config.blocking = 0): every NCCL
// call may return ncclInProgress, and the host then polls ncclCommGetAsyncError, with the timeout, instead of
// blocking inside NCCL where no timeout can reach it.
#include "train/collective_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "train/collective_mpi.h"  // defines: collective_mpi

namespace stapo {

namespace {

void cuda_check(cudaError_t code, const char* what) {
  STAPO_CHECK(code == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(code));
}

ncclDataType_t nccl_type(ElementType type) {
  return type == ElementType::f64 ? ncclFloat64 : type == ElementType::f32 ? ncclFloat32 : ncclBfloat16;
}

class NcclCollective : public Collective {
 public:
  NcclCollective(const DistributedEnv& env, const NcclOptions& options)
      : Collective(env.rank, env.world_size, env.local_rank), timeout_s_(options.timeout_s) {
    int devices = 0;
    cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    STAPO_CHECK(local_rank_ < devices, "rank ", rank_, " is local rank ", local_rank_, " on its node, which has ",
                devices, " GPU(s): start at most one rank per GPU (NCCL refuses two ranks on one GPU)");
    cuda_check(cudaSetDevice(local_rank_), "cudaSetDevice");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (world_size_ > 1 && env.mpi) {
      mpi_ = collective_mpi(env);
      mpi_->broadcast_host(&id, sizeof(id), 0);
    } else if (world_size_ > 1) {
      STAPO_CHECK(!options.rendezvous_dir.empty(), env.launcher, " started ", world_size_, " processes without MPI: "
                  "give --rendezvous DIR, a directory every node sees, for rank 0 to share the NCCL id (or launch with "
                  "mpirun / srun --mpi=pmix)");
      const std::string bytes = rendezvous_share(options.rendezvous_dir, env,
                                                 std::string(reinterpret_cast<const char*>(&id), sizeof(id)), timeout_s_);
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check(ncclCommInitRankConfig(&comm_, world_size_, id, rank_, &config), "ncclCommInitRankConfig");
    if (world_size_ > 1 && !mpi_) rendezvous_done(options.rendezvous_dir, env);  // every rank has joined
    cuda_check(cudaStreamCreateWithFlags(&host_stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~NcclCollective() override {
    if (scratch_) cudaFree(scratch_);
    if (host_stream_) cudaStreamDestroy(host_stream_);
    if (comm_) {
      ncclCommFinalize(comm_);
      ncclResult_t state = ncclInProgress;
      while (state == ncclInProgress && ncclCommGetAsyncError(comm_, &state) == ncclSuccess) std::this_thread::yield();
      ncclCommDestroy(comm_);
    }
  }

  const char* backend() const override { return "nccl"; }

  void all_reduce_host(double* data, size_t n, ReduceOp op) override {
    double* dev = scratch(n * sizeof(double));
    cuda_check(cudaMemcpyAsync(dev, data, n * sizeof(double), cudaMemcpyHostToDevice, host_stream_), "copy");
    check(ncclAllReduce(dev, dev, n, ncclFloat64, op == ReduceOp::sum ? ncclSum : ncclMax, comm_, host_stream_),
          "ncclAllReduce");
    cuda_check(cudaMemcpyAsync(data, dev, n * sizeof(double), cudaMemcpyDeviceToHost, host_stream_), "copy");
    synchronize(host_stream_);
  }

  std::vector<double> all_gather_host(const std::vector<double>& mine) override {
    std::vector<double> counts(size_t(world_size_), 0.0);
    counts[size_t(rank_)] = double(mine.size());
    all_reduce_host(counts.data(), counts.size(), ReduceOp::sum);
    const size_t most = size_t(*std::max_element(counts.begin(), counts.end()));
    std::vector<double> padded(most * size_t(world_size_));
    if (most > 0) {  // every rank sends `most` values, its own first
      double* dev = scratch(padded.size() * sizeof(double));
      std::vector<double> send(mine);
      send.resize(most);
      double* own = dev + size_t(rank_) * most;
      cuda_check(cudaMemcpyAsync(own, send.data(), most * sizeof(double), cudaMemcpyHostToDevice, host_stream_), "copy");
      check(ncclAllGather(own, dev, most, ncclFloat64, comm_, host_stream_), "ncclAllGather");
      cuda_check(cudaMemcpyAsync(padded.data(), dev, padded.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                 host_stream_),
                 "copy");
      synchronize(host_stream_);
    }
    std::vector<double> out;
    for (int r = 0; r < world_size_; r++)
      out.insert(out.end(), padded.begin() + ptrdiff_t(size_t(r) * most),
                 padded.begin() + ptrdiff_t(size_t(r) * most + size_t(counts[size_t(r)])));
    return out;
  }

  void broadcast_host(void* data, size_t bytes, int root) override {
    void* dev = scratch(bytes);
    cuda_check(cudaMemcpyAsync(dev, data, bytes, cudaMemcpyHostToDevice, host_stream_), "copy");
    check(ncclBroadcast(dev, dev, bytes, ncclInt8, root, comm_, host_stream_), "ncclBroadcast");
    cuda_check(cudaMemcpyAsync(data, dev, bytes, cudaMemcpyDeviceToHost, host_stream_), "copy");
    synchronize(host_stream_);
  }

  // Under MPI, MPI's barrier, which has no timeout: rank 0's reference pass (train/train_main.h) may keep the others
  // waiting here far longer than any collective should take. Without MPI, --collective-timeout bounds it too.
  void barrier() override {
    if (mpi_) return mpi_->barrier();
    double one = 1;
    all_reduce_host(&one, 1, ReduceOp::sum);
  }

  void all_reduce(void* data, size_t n, ElementType type, void* stream) override {
    check(ncclAllReduce(data, data, n, nccl_type(type), ncclSum, comm_, cuda_stream(stream)), "ncclAllReduce");
  }

  // NCCL splits a buffer into W equal blocks: the buffer is padded to W·ceil(n/W) (buffer_elements), so that
  // block r is exactly shard_range(n, r, W) plus padding.
  void reduce_scatter(void* data, size_t n, ElementType type, void* stream) override {
    const size_t per = padded_share(n);
    char* own = static_cast<char*>(data) + size_t(rank_) * per * element_size(type);
    check(ncclReduceScatter(data, own, per, nccl_type(type), ncclSum, comm_, cuda_stream(stream)), "ncclReduceScatter");
  }

  void all_gather(void* data, size_t n, ElementType type, void* stream) override {
    const size_t per = padded_share(n);
    char* own = static_cast<char*>(data) + size_t(rank_) * per * element_size(type);
    check(ncclAllGather(own, data, per, nccl_type(type), comm_, cuda_stream(stream)), "ncclAllGather");
  }

  // One group: NCCL runs the pieces (a bucket cut at shard boundaries) together; in place on each root.
  void reduce(void* data, const std::vector<ReducePiece>& pieces, ElementType type, void* stream) override {
    const size_t es = element_size(type);
    check(ncclGroupStart(), "ncclGroupStart");
    for (const ReducePiece& p : pieces) {
      char* at = static_cast<char*>(data) + p.range.begin * es;
      check(ncclReduce(at, at, p.range.count, nccl_type(type), ncclSum, p.root, comm_, cuda_stream(stream)),
            "ncclReduce");
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }

  size_t buffer_elements(size_t n) const override { return padded_share(n) * size_t(world_size_); }

  void synchronize(void* stream) override {
    wait_until([&] {
      const cudaError_t state = cudaStreamQuery(cuda_stream(stream));
      if (state == cudaErrorNotReady) return false;
      cuda_check(state, "stream of the collectives");
      return true;
    }, "the stream's collectives");
  }

  [[noreturn]] void abort(const std::string& message) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    if (mpi_) mpi_->abort(message);
    Collective::abort(message);
  }

 private:
  size_t padded_share(size_t n) const { return (n + size_t(world_size_) - 1) / size_t(world_size_); }
  static cudaStream_t cuda_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

  template <typename T = double>
  T* scratch(size_t bytes) {
    if (bytes > scratch_bytes_) {
      if (scratch_) cuda_check(cudaFree(scratch_), "cudaFree");
      scratch_ = nullptr;
      cuda_check(cudaMalloc(&scratch_, bytes), "cudaMalloc of the host collectives' buffer");
      scratch_bytes_ = bytes;
    }
    return static_cast<T*>(scratch_);
  }

  // Polls `done` (and the communicator's asynchronous error) until it says yes; after timeout_s the communicator
  // is aborted and the error names this rank and what it waited for.
  template <typename Done>
  void wait_until(const Done& done, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    while (!done()) {
      ncclResult_t state = ncclSuccess;
      if (comm_) ncclCommGetAsyncError(comm_, &state);
      STAPO_CHECK(state == ncclSuccess || state == ncclInProgress, "rank ", rank_, " of ", world_size_, ": NCCL error (",
                  ncclGetErrorString(state), ": ", ncclGetLastError(comm_), ") while waiting for ", what);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s_) {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("rank ", rank_, " of ", world_size_, " waited ", timeout_s_, " s for ", what, ": another rank has failed "
             "or never started (see its error), or the network between nodes is down (NCCL_DEBUG=INFO says more); "
             "--collective-timeout sets this limit");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // A non-blocking communicator's call may return ncclInProgress: it is done when the asynchronous state is.
  void check(ncclResult_t result, const char* what) {
    if (result == ncclInProgress && comm_) {
      wait_until([&] {
        ncclResult_t state = ncclInProgress;
        ncclCommGetAsyncError(comm_, &state);
        return state != ncclInProgress;
      }, what);
      ncclCommGetAsyncError(comm_, &result);
    }
    STAPO_CHECK(result == ncclSuccess, "rank ", rank_, " of ", world_size_, ": ", what, " failed: ",
                ncclGetErrorString(result), " (", ncclGetLastError(comm_), ")");
  }

  double timeout_s_;
  std::unique_ptr<Collective> mpi_;  // when MPI started the job: the id's broadcast and abort
  ncclComm_t comm_ = nullptr;
  cudaStream_t host_stream_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Collective> collective_nccl(const DistributedEnv& env, const NcclOptions& options) {
  return std::make_unique<NcclCollective>(env, options);
}

}  // namespace stapo
