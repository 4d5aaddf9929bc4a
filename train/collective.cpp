// The collective interface, the single-process backend, the launcher's environment and the file rendezvous
// (train/collective.h). The MPI backend is train/collective_mpi.cpp, the NCCL one train/collective_nccl.cpp.
#include "train/collective.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/file_io.h"
#include "train/collective_mpi.h"  // defines: collective_mpi

namespace stapo {

namespace {

// Parses an environment variable that holds a non-negative integer; absent: nullopt.
std::optional<int> env_int(const EnvLookup& lookup, const char* name) {
  const char* text = lookup(name);
  if (!text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  STAPO_CHECK(end != text && *end == '\0' && errno == 0 && value >= 0 && value <= (1 << 24), "environment variable ",
              name, "=\"", text, "\" is not a rank or a process count: the launcher set it, or a script did by mistake");
  return int(value);
}

int env_required(const EnvLookup& lookup, const char* name, const char* because) {
  const std::optional<int> v = env_int(lookup, name);
  STAPO_CHECK(v.has_value(), "environment variable ", name, " is not set although ", because,
              " is: launch with mpirun or srun, or unset both for a single process");
  return *v;
}

class SingleCollective : public Collective {
 public:
  SingleCollective() : Collective(0, 1, 0) {}
  const char* backend() const override { return "single"; }
  void all_reduce_host(double*, size_t, ReduceOp) override {}
  std::vector<double> all_gather_host(const std::vector<double>& mine) override { return mine; }
  void broadcast_host(void*, size_t, int) override {}
  void barrier() override {}
  void all_reduce(void*, size_t, ElementType, void*) override {}
  void reduce_scatter(void*, size_t, ElementType, void*) override {}
  void all_gather(void*, size_t, ElementType, void*) override {}
  void reduce(void*, const std::vector<ReducePiece>&, ElementType, void*) override {}
  std::unique_ptr<Collective> split(int color) override { return color < 0 ? nullptr : collective_single(); }
};

std::string rendezvous_path(const std::string& dir, const DistributedEnv& env) {
  std::string id = env.job_id.empty() ? "job" : env.job_id;
  for (char& c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  return dir + "/stapo-rendezvous-" + id;
}

constexpr char kRendezvousMagic[] = "stapo-rendezvous 1";

std::string hex_of(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += {digits[c >> 4], digits[c & 15]};
  return out;
}

}  // namespace

DistributedEnv distributed_env(const EnvLookup& lookup_in) {
  const EnvLookup lookup = lookup_in ? lookup_in : [](const char* name) -> const char* { return std::getenv(name); };
  DistributedEnv env;
  if (const std::optional<int> size = env_int(lookup, "OMPI_COMM_WORLD_SIZE")) {
    env.launcher = "mpirun";
    env.world_size = *size;
    env.rank = env_required(lookup, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    env.local_rank = env_int(lookup, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
    env.mpi = true;
    const char* ns = lookup("PMIX_NAMESPACE");
    env.job_id = ns ? ns : "mpirun";
  } else if (const std::optional<int> size = env_int(lookup, "SLURM_STEP_NUM_TASKS")) {
    env.launcher = "slurm";
    env.world_size = *size;
    env.rank = env_required(lookup, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS");
    env.local_rank = env_int(lookup, "SLURM_LOCALID").value_or(0);
    env.mpi = lookup("PMIX_RANK") != nullptr;  // srun --mpi=pmix: MPI_Init can join the step
    const char* job = lookup("SLURM_JOB_ID");
    const char* step = lookup("SLURM_STEP_ID");
    env.job_id = cat(job ? job : "slurm", ".", step ? step : "0");
  }
  STAPO_CHECK(env.world_size >= 1 && env.rank < env.world_size, "the launcher says rank ", env.rank, " of ",
              env.world_size, " processes (", env.launcher, " environment): a rank must be in [0, world size)");
  return env;
}

ShardRange shard_range(size_t n, int rank, int world_size) {
  const size_t per = (n + size_t(world_size) - 1) / size_t(world_size);
  const size_t begin = std::min(n, per * size_t(rank));
  return {begin, std::min(n, begin + per) - begin};
}

ShardRange range_overlap(const ShardRange& range, size_t offset, size_t numel) {
  const size_t lo = std::max(offset, range.begin), hi = std::min(offset + numel, range.end());
  return hi > lo ? ShardRange{lo, hi - lo} : ShardRange{lo, 0};
}

std::vector<ReducePiece> reduce_pieces(const ShardRange& range, size_t n, int world_size) {
  STAPO_CHECK(range.end() <= n, "reduce_pieces: range [", range.begin, ", ", range.end(), ") outside a buffer of ", n);
  std::vector<ReducePiece> out;
  if (range.count == 0) return out;
  const size_t share = shard_range(n, 0, world_size).count;  // ranks before the range's first element own none of it
  for (int r = int(range.begin / share); r < world_size; ++r) {
    const ShardRange shard = shard_range(n, r, world_size);
    if (shard.begin >= range.end()) break;
    const ShardRange part = range_overlap(shard, range.begin, range.count);
    if (part.count > 0) out.push_back({part, r});
  }
  return out;
}

size_t element_size(ElementType type) { return type == ElementType::f64 ? 8 : type == ElementType::f32 ? 4 : 2; }

template <>
ElementType element_type_of<float>() {
  return ElementType::f32;
}
template <>
ElementType element_type_of<double>() {
  return ElementType::f64;
}

std::unique_ptr<Collective> Collective::split(int) {
  fail("the ", backend(), " collective backend cannot form sub-groups of ranks");
}

void Collective::abort(const std::string& message) {
  fprintf(stderr, "error: rank %d of %d: %s\n", rank_, world_size_, message.c_str());
  fflush(stderr);
  std::_Exit(1);
}

std::unique_ptr<Collective> collective_single() { return std::make_unique<SingleCollective>(); }

bool collective_have_mpi() {
#ifdef STAPO_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Collective> collective_open_host(const DistributedEnv& env) {
  if (env.world_size == 1) return collective_single();
  STAPO_CHECK(collective_have_mpi(), env.launcher, " started ", env.world_size,
              " processes, but this build has no MPI: install libopenmpi-dev (dev/deps.sh) and rebuild, or run one "
              "process");
  STAPO_CHECK(env.mpi, "srun started ", env.world_size, " processes without PMIx, so MPI cannot join them: launch "
              "with `srun --mpi=pmix`, or with mpirun inside the allocation (docs/distributed.md)");
  return collective_mpi(env);
}

std::string rendezvous_share(const std::string& dir, const DistributedEnv& env, const std::string& payload,
                             double timeout_s) {
  const std::string path = rendezvous_path(dir, env);
  if (env.rank == 0) {
    STAPO_CHECK(!file_exists(path), path, " exists already: an earlier launch with the same id (", env.job_id,
                ") left it, or another job shares the id. Remove it and launch again");
    make_directories(dir);
    write_file_atomic(path, cat(kRendezvousMagic, "\nworld ", env.world_size, "\n", hex_of(payload), "\n"));
    return payload;
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  while (!file_exists(path)) {
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    STAPO_CHECK(waited < timeout_s, "rank ", env.rank, " of ", env.world_size, " waited ", timeout_s,
                " s for rank 0's rendezvous file ", path, " and it did not appear. Is ", dir,
                " one directory that every node sees (the same path on a shared filesystem)? Did rank 0 fail (see its "
                "error)? A slow start needs a longer --collective-timeout");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::istringstream in(read_text_file(path));
  std::string magic, world_word, hex;
  int world = 0;
  std::getline(in, magic);
  in >> world_word >> world >> hex;
  const bool is_hex = std::all_of(hex.begin(), hex.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  STAPO_CHECK(magic == kRendezvousMagic && world_word == "world" && hex.size() == 2 * payload.size() && is_hex, path,
              ": not a stapo rendezvous file of ", payload.size(), " bytes; remove it and launch again");
  STAPO_CHECK(world == env.world_size, path, " was written by a job of ", world, " processes, this one has ",
              env.world_size, ": a stale file of an earlier launch with the same id; remove it and launch again");
  std::string out(payload.size(), '\0');
  for (size_t i = 0; i < out.size(); i++) out[i] = char(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

void rendezvous_done(const std::string& dir, const DistributedEnv& env) {
  if (env.rank != 0) return;
  std::error_code ec;
  std::filesystem::remove(rendezvous_path(dir, env), ec);  // a leftover is refused by the next launch, by name
}

}  // namespace stapo
