// The MPI backend (train/collective_mpi.h). MPI counts are int: every collective runs in chunks of at most
// 2^30 elements, each chunk split by rank exactly as the whole buffer is (shard_range), so any size works.
#include "train/collective_mpi.h"

#include "common/error.h"

#ifdef STAPO_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>

namespace stapo {

namespace {

constexpr size_t kChunk = size_t(1) << 30;
int g_backends = 0;  // MPI backend objects alive: MPI_Finalize when the last one goes

void mpi_check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail("MPI_", what, " failed: ", std::string(text, size_t(length)));
}

MPI_Datatype mpi_type(ElementType type) {
  STAPO_CHECK(type != ElementType::bf16, "the MPI backend carries the CPU engine's float and double buffers; bf16 "
              "buffers are the NCCL backend's");
  return type == ElementType::f64 ? MPI_DOUBLE : MPI_FLOAT;
}

// The part of rank r's shard inside the chunk [c0, c1): (offset from c0, count).
std::pair<int, int> shard_in_chunk(size_t n, int r, int world, size_t c0, size_t c1) {
  const ShardRange s = shard_range(n, r, world);
  const size_t lo = std::max(s.begin, c0), hi = std::min(s.end(), c1);
  return hi > lo ? std::make_pair(int(lo - c0), int(hi - lo)) : std::make_pair(0, 0);
}

class MpiCollective : public Collective {
 public:
  MpiCollective(MPI_Comm comm, int local_rank) : Collective(0, 1, local_rank), comm_(comm) {
    mpi_check(MPI_Comm_rank(comm_, &rank_), "Comm_rank");
    mpi_check(MPI_Comm_size(comm_, &world_size_), "Comm_size");
    ++g_backends;
  }
  ~MpiCollective() override {
    MPI_Comm_free(&comm_);
    if (--g_backends == 0) {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    }
  }
  const char* backend() const override { return "mpi"; }

  void all_reduce_host(double* data, size_t n, ReduceOp op) override {
    for (size_t c0 = 0; c0 < n; c0 += kChunk)
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + c0, int(std::min(kChunk, n - c0)), MPI_DOUBLE,
                              op == ReduceOp::sum ? MPI_SUM : MPI_MAX, comm_),
                "Allreduce");
  }

  std::vector<double> all_gather_host(const std::vector<double>& mine) override {
    STAPO_CHECK(mine.size() < kChunk, "all_gather_host: ", mine.size(), " values from one rank, at most ", kChunk);
    const int count = int(mine.size());
    std::vector<int> counts(static_cast<size_t>(world_size_)), displs(static_cast<size_t>(world_size_));
    mpi_check(MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_), "Allgather");
    size_t total = 0;
    for (int r = 0; r < world_size_; r++) {
      displs[size_t(r)] = int(total);
      total += size_t(counts[size_t(r)]);
    }
    STAPO_CHECK(total < kChunk, "all_gather_host: ", total, " values in all, at most ", kChunk);
    std::vector<double> out(total);
    mpi_check(MPI_Allgatherv(mine.data(), count, MPI_DOUBLE, out.data(), counts.data(), displs.data(), MPI_DOUBLE,
                             comm_),
              "Allgatherv");
    return out;
  }

  void broadcast_host(void* data, size_t bytes, int root) override {
    for (size_t c0 = 0; c0 < bytes; c0 += kChunk)
      mpi_check(MPI_Bcast(static_cast<char*>(data) + c0, int(std::min(kChunk, bytes - c0)), MPI_BYTE, root, comm_),
                "Bcast");
  }

  void barrier() override { mpi_check(MPI_Barrier(comm_), "Barrier"); }

  void all_reduce(void* data, size_t n, ElementType type, void*) override {
    const size_t es = element_size(type);
    for (size_t c0 = 0; c0 < n; c0 += kChunk)
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + c0 * es, int(std::min(kChunk, n - c0)),
                              mpi_type(type), MPI_SUM, comm_),
                "Allreduce");
  }

  void reduce_scatter(void* data, size_t n, ElementType type, void*) override {
    const size_t es = element_size(type);
    char* bytes = static_cast<char*>(data);
    std::vector<int> counts(static_cast<size_t>(world_size_));
    for (size_t c0 = 0; c0 < n; c0 += kChunk) {
      const size_t c1 = std::min(n, c0 + kChunk);
      for (int r = 0; r < world_size_; r++) counts[size_t(r)] = shard_in_chunk(n, r, world_size_, c0, c1).second;
      // In place, MPI leaves this rank's block at the start of the chunk: it is moved to where it belongs.
      mpi_check(MPI_Reduce_scatter(MPI_IN_PLACE, bytes + c0 * es, counts.data(), mpi_type(type), MPI_SUM, comm_),
                "Reduce_scatter");
      const auto [offset, count] = shard_in_chunk(n, rank_, world_size_, c0, c1);
      if (count > 0) std::memmove(bytes + (c0 + size_t(offset)) * es, bytes + c0 * es, size_t(count) * es);
    }
  }

  void reduce(void* data, const std::vector<ReducePiece>& pieces, ElementType type, void*) override {
    const size_t es = element_size(type);
    for (const ReducePiece& p : pieces)
      for (size_t c0 = 0; c0 < p.range.count; c0 += kChunk) {
        char* at = static_cast<char*>(data) + (p.range.begin + c0) * es;
        const int count = int(std::min(kChunk, p.range.count - c0));
        mpi_check(MPI_Reduce(rank_ == p.root ? MPI_IN_PLACE : at, at, count, mpi_type(type), MPI_SUM, p.root, comm_),
                  "Reduce");
      }
  }

  void all_gather(void* data, size_t n, ElementType type, void*) override {
    const size_t es = element_size(type);
    std::vector<int> counts(static_cast<size_t>(world_size_)), displs(static_cast<size_t>(world_size_));
    for (size_t c0 = 0; c0 < n; c0 += kChunk) {
      const size_t c1 = std::min(n, c0 + kChunk);
      for (int r = 0; r < world_size_; r++)
        std::tie(displs[size_t(r)], counts[size_t(r)]) = shard_in_chunk(n, r, world_size_, c0, c1);
      mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, static_cast<char*>(data) + c0 * es, counts.data(),
                               displs.data(), mpi_type(type), comm_),
                "Allgatherv");
    }
  }

  std::unique_ptr<Collective> split(int color) override {
    MPI_Comm sub = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, rank_, &sub), "Comm_split");
    if (sub == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCollective>(sub, local_rank_);
  }

  [[noreturn]] void abort(const std::string& message) override {
    fprintf(stderr, "error: rank %d of %d: %s\n", rank_, world_size_, message.c_str());
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);  // mpirun ends every rank of the job
    std::_Exit(1);
  }

 private:
  MPI_Comm comm_;
};

}  // namespace

std::unique_ptr<Collective> collective_mpi(const DistributedEnv& env) {
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "Initialized");
  if (!initialized) {
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "Init_thread");
  }
  MPI_Comm world = MPI_COMM_NULL;  // our own communicator: no other MPI user in the process can mix with it
  mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "Comm_dup");
  auto out = std::make_unique<MpiCollective>(world, env.local_rank);
  STAPO_CHECK(out->rank() == env.rank && out->world_size() == env.world_size, "MPI counts rank ", out->rank(), " of ",
              out->world_size(), ", the ", env.launcher, " environment rank ", env.rank, " of ", env.world_size,
              ": this process was not started by the launcher its variables name");
  return out;
}

}  // namespace stapo

#else  // no MPI in this build

namespace stapo {

std::unique_ptr<Collective> collective_mpi(const DistributedEnv& env) {
  fail(env.launcher, " started ", env.world_size, " processes, but this build has no MPI: install libopenmpi-dev "
       "(dev/deps.sh) and rebuild");
}

}  // namespace stapo

#endif
