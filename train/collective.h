// Data parallel: one process per GPU (or per CPU engine), the collectives between them, and how a process
// learns its place in the job. The backends are existing engines, never a transport of our own:
//   single  one process (W = 1): every collective is the identity;
//   mpi     host buffers (the CPU engine), Debian's OpenMPI; chosen when mpirun (or srun --mpi=pmix) started us;
//   nccl    device buffers (the CUDA engine), train/collective_nccl.h; its id travels by MPI_Bcast when MPI is
//           there, else through a file in a shared directory (rendezvous_share below).
// Rank, world size and local rank come from the launcher's environment (distributed_env). Every rank must call
// the collectives in the same order with the same sizes; a rank that fails calls abort(), which ends the job.
// docs/distributed.md says what is reduced when and how to launch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace stapo {

// Where this process sits, as the launcher says (OMPI_COMM_WORLD_* from mpirun, else SLURM_* from srun).
struct DistributedEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string launcher = "none";  // "mpirun", "slurm" or "none"
  bool mpi = false;               // started by an MPI launcher (mpirun, srun --mpi=pmix): MPI_Init can join the job
  std::string job_id;             // unique per launch (Slurm's job.step, PMIx's namespace): names a rendezvous file
};

// Reads the launcher's variables through `lookup` (getenv by default; tests pass their own). A variable that is
// not a number, or a rank outside [0, world size), is an error naming it. Under Slurm the world size is the
// job step's (SLURM_STEP_NUM_TASKS, set by srun only), so a batch script's own process is one rank, not N.
using EnvLookup = std::function<const char*(const char*)>;
DistributedEnv distributed_env(const EnvLookup& lookup = nullptr);

// Rank r's share of an n-element buffer under ZeRO-1: equal shares of ceil(n / W) elements in rank order, the
// last ones shorter or empty when W does not divide n. Every backend and every checkpoint uses this split.
struct ShardRange {
  size_t begin = 0, count = 0;
  size_t end() const { return begin + count; }
};
ShardRange shard_range(size_t n, int rank, int world_size);
// The part of [offset, offset + numel) (a tensor in a parameter buffer) inside `range` (count 0: none).
ShardRange range_overlap(const ShardRange& range, size_t offset, size_t numel);

// A run of a buffer that lies in one rank's shard, and that rank (Collective::reduce).
struct ReducePiece {
  ShardRange range;
  int root = 0;
};
// `range` of an n-element buffer cut at the shard boundaries of W ranks: one piece per rank whose
// shard_range(n, r, W) it meets, in buffer (= rank) order, no empty pieces. Reducing every piece to its root leaves
// each rank's shard of `range` summed over ranks, as reduce_scatter leaves the whole shard: ZeRO-1's overlapped
// reduction (train/cuda_zero.h) reduces the gradient buffer this way, one bucket of it at a time.
std::vector<ReducePiece> reduce_pieces(const ShardRange& range, size_t n, int world_size);

enum class ElementType { f32, f64, bf16 };
size_t element_size(ElementType type);
template <typename T>
ElementType element_type_of();  // float → f32, double → f64
enum class ReduceOp { sum, max };

class Collective {
 public:
  virtual ~Collective() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  virtual const char* backend() const = 0;  // "single", "mpi", "nccl"

  // Host values, every backend: the step's normalisers, metrics, flags. In place.
  virtual void all_reduce_host(double* data, size_t n, ReduceOp op) = 0;
  // Every rank's `mine` (of any length) concatenated in rank order, on every rank.
  virtual std::vector<double> all_gather_host(const std::vector<double>& mine) = 0;
  virtual void broadcast_host(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // The engine's buffers: host memory for single and mpi, device memory for nccl (`stream`: its cudaStream_t;
  // ignored by the host backends). All in place.
  //   all_reduce      data (n) ← Σ over ranks
  //   reduce_scatter  data[shard_range(n, rank, W)] ← Σ over ranks of that range; the rest of data is left undefined
  //   all_gather      data (n) ← every rank's shard_range of its data
  // A buffer given to reduce_scatter or all_gather must hold buffer_elements(n) elements (nccl: W·ceil(n/W),
  // the padding is read and written).
  virtual void all_reduce(void* data, size_t n, ElementType type, void* stream) = 0;
  virtual void reduce_scatter(void* data, size_t n, ElementType type, void* stream) = 0;
  virtual void all_gather(void* data, size_t n, ElementType type, void* stream) = 0;
  //   reduce          for each piece: data[piece.range] on rank piece.root ← Σ over ranks of that range; elsewhere
  //                   data is left undefined (nccl: the pieces as one group of ncclReduce)
  virtual void reduce(void* data, const std::vector<ReducePiece>& pieces, ElementType type, void* stream) = 0;
  virtual size_t buffer_elements(size_t n) const { return n; }
  // Waits for the collectives queued on `stream` (nccl: with the timeout, failing with a clear error when a peer
  // never comes); the host backends are done when their call returns.
  virtual void synchronize(void* /*stream*/) {}

  // A sub-group of the ranks with the same color (< 0: this rank joins none and gets null), ranked as now.
  // For tests that run a job of W ranks and a smaller one inside one launch.
  virtual std::unique_ptr<Collective> split(int color);

  // Ends every rank of the job after printing "error: rank r of W: <message>" (MPI_Abort; nccl: the communicator
  // is aborted first). Called by a rank that failed, so that the others do not wait for it forever.
  [[noreturn]] virtual void abort(const std::string& message);

 protected:
  Collective(int rank, int world_size, int local_rank)
      : rank_(rank), world_size_(world_size), local_rank_(local_rank) {}
  int rank_, world_size_, local_rank_;
};

// One process: W = 1, every collective the identity.
std::unique_ptr<Collective> collective_single();
// The host backend for this process: single when W = 1, else MPI (MPI_Init here; MPI_Finalize when the object
// goes). An error when W > 1 and MPI cannot be used (built without it, or Slurm started us without PMIx),
// saying how to launch instead.
std::unique_ptr<Collective> collective_open_host(const DistributedEnv& env);
bool collective_have_mpi();  // whether this build has the MPI backend

// The file rendezvous, for a job without MPI (srun without PMIx): rank 0 writes `payload` (an NCCL id) to
// <dir>/stapo-rendezvous-<job_id> atomically; every other rank (passing a payload of the same size, whose
// content is ignored) waits for that file up to timeout_s and returns its
// payload, or fails saying which file it waited for, how long, and what to check (a directory every node shares;
// rank 0's own error). The file records the world size: one of another job size is refused. Rank 0 refuses a file
// left by an earlier launch with the same id, and removes its file with rendezvous_done once every rank has read it.
std::string rendezvous_share(const std::string& dir, const DistributedEnv& env, const std::string& payload,
                             double timeout_s);
void rendezvous_done(const std::string& dir, const DistributedEnv& env);

}  // namespace stapo
