// The parts of train/collective.h that need no second process: the launcher's environment (mpirun, srun, a
// Slurm batch script, bad values), the ZeRO-1 split of a buffer (and of the CUDA engine's padded parameter
// buffer against the checkpoint files' order), the single-process backend, and the file
// rendezvous of the NCCL id (ranks as threads here; its timeout and its refusals). The MPI backend is tested
// under mpirun by test_data_parallel.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "common/file_io.h"
#include "model/params.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"
#include "train/collective.h"

namespace stapo {
namespace {

DistributedEnv env_of(const std::map<std::string, std::string>& vars) {
  return distributed_env([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(Collective, LauncherEnvironment) {
  DistributedEnv e = env_of({});
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.launcher, "none");
  EXPECT_FALSE(e.mpi);

  e = env_of({{"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
              {"PMIX_NAMESPACE", "prterun-node-123@1"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_PROCID", "0"}});
  EXPECT_EQ(e.launcher, "mpirun");  // mpirun inside a Slurm allocation: mpirun's ranks
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_TRUE(e.mpi);
  EXPECT_EQ(e.job_id, "prterun-node-123@1");

  e = env_of({{"SLURM_STEP_NUM_TASKS", "16"}, {"SLURM_PROCID", "9"}, {"SLURM_LOCALID", "1"}, {"SLURM_JOB_ID", "4242"},
              {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "16"}});
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_FALSE(e.mpi);  // srun without --mpi=pmix
  EXPECT_EQ(e.job_id, "4242.0");
  e = env_of({{"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_PROCID", "1"}, {"PMIX_RANK", "1"}});
  EXPECT_TRUE(e.mpi);

  // A batch script's own process (sbatch sets SLURM_NTASKS and SLURM_PROCID, srun alone the step's count): one rank.
  e = env_of({{"SLURM_NTASKS", "16"}, {"SLURM_PROCID", "0"}, {"SLURM_JOB_ID", "4242"}});
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.launcher, "none");

  std::string msg = test::error_message([] { env_of({{"OMPI_COMM_WORLD_SIZE", "two"}}); });
  EXPECT_NE(msg.find("OMPI_COMM_WORLD_SIZE=\"two\" is not a rank or a process count"), std::string::npos) << msg;
  msg = test::error_message([] { env_of({{"OMPI_COMM_WORLD_SIZE", "2"}}); });
  EXPECT_NE(msg.find("OMPI_COMM_WORLD_RANK is not set"), std::string::npos) << msg;
  msg = test::error_message([] { env_of({{"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_PROCID", "4"}}); });
  EXPECT_NE(msg.find("rank 4 of 4"), std::string::npos) << msg;
  msg = test::error_message([] { env_of({{"SLURM_STEP_NUM_TASKS", "0"}, {"SLURM_PROCID", "0"}}); });
  EXPECT_NE(msg.find("rank 0 of 0"), std::string::npos) << msg;
}

// The shards tile [0, n) in rank order, each at most ceil(n / W) long and all but the tail exactly that.
TEST(Collective, ShardRangesTileTheBuffer) {
  for (size_t n = 0; n <= 60; n++)
    for (int world = 1; world <= 9; world++) {
      const size_t per = (n + size_t(world) - 1) / size_t(world);
      size_t next = 0;
      for (int r = 0; r < world; r++) {
        const ShardRange s = shard_range(n, r, world);
        ASSERT_EQ(s.begin, next) << "n " << n << " W " << world << " rank " << r;
        ASSERT_LE(s.count, per);
        if (s.end() < n) {
          ASSERT_EQ(s.count, per) << "only the tail may be short";
        }
        next = s.end();
      }
      ASSERT_EQ(next, n) << "n " << n << " W " << world;
    }
  EXPECT_EQ(shard_range(5, 3, 4).count, 0u);  // 2, 2, 1, 0
  EXPECT_EQ(shard_range(950, 3, 4).begin, 714u);
  EXPECT_EQ(shard_range(950, 3, 4).count, 236u);
}

// The CUDA engine's ZeRO-1 layout (train/cuda_zero.h), on the host: a parameter buffer padded as CudaModel pads it
// (tensors at 128-element boundaries, the total a multiple of W × 128) and split by shard_range. Each rank's shard
// must be 128-aligned and one run of the file's packed order (param_packed_range: what load_optimizer reads), the
// runs must tile the file in rank order, a rank's AdamW parts (range_overlap per tensor) must be exactly its run,
// and the whole buffer gathered must become the file (param_drop_padding: what save_optimizer writes).
TEST(Collective, ShardsOfAPaddedParameterBufferAreRunsOfTheFile) {
  const std::vector<ParamSpec> specs = model_param_specs(test::train_tiny_config(19));
  size_t total = 0, count = 0;
  const std::vector<size_t> offsets = param_offsets(specs, 128, &total);
  for (const ParamSpec& s : specs) count += s.numel;
  ASSERT_GT(total, count) << "the tiny model's tensors should leave padding between them";
  for (size_t world = 1; world <= 5; world++) {
    const size_t multiple = 128 * world, padded = (total + multiple - 1) / multiple * multiple;
    std::vector<float> buffer(padded, -1.0f);  // each tensor element holds its index in the file; padding −1
    size_t at = 0;
    for (size_t i = 0; i < specs.size(); i++)
      for (size_t j = 0; j < specs[i].numel; j++) buffer[offsets[i] + j] = float(at++);
    size_t next = 0;
    for (int r = 0; r < int(world); r++) {
      const ShardRange shard = shard_range(padded, r, int(world));
      ASSERT_EQ(shard.count, padded / world) << "W " << world;
      ASSERT_EQ(shard.begin % 128, 0u) << "W " << world << " rank " << r;
      const PackedRange run = param_packed_range(specs, offsets, shard.begin, shard.end());
      ASSERT_EQ(run.first, next) << "W " << world << " rank " << r;
      std::vector<float> parts;  // the shard's tensor elements, tensor by tensor as the update visits them
      for (size_t i = 0; i < specs.size(); i++) {
        const ShardRange part = range_overlap(shard, offsets[i], specs[i].numel);
        parts.insert(parts.end(), buffer.begin() + ptrdiff_t(part.begin), buffer.begin() + ptrdiff_t(part.end()));
      }
      ASSERT_EQ(parts.size(), run.last - run.first) << "W " << world << " rank " << r;
      for (size_t k = 0; k < parts.size(); k++) ASSERT_EQ(parts[k], float(run.first + k)) << "W " << world;
      next = run.last;
    }
    ASSERT_EQ(next, count) << "W " << world;
    param_drop_padding(specs, offsets, buffer);
    ASSERT_EQ(buffer.size(), count);
    for (size_t k = 0; k < count; k++) ASSERT_EQ(buffer[k], float(k)) << "W " << world;
  }
  EXPECT_EQ(range_overlap({10, 5}, 12, 100).begin, 12u);
  EXPECT_EQ(range_overlap({10, 5}, 12, 100).count, 3u);
  EXPECT_EQ(range_overlap({10, 5}, 0, 10).count, 0u);
  EXPECT_EQ(range_overlap({10, 5}, 15, 3).count, 0u);
}

// ZeRO-1's overlapped reduction (train/cuda_zero.h) reduces a bucket of the buffer as pieces, each to the rank whose
// shard holds it: the pieces must tile the bucket in order, each inside its root's shard_range, and over any cut of
// the buffer into buckets each rank must receive exactly its shard (what reduce_scatter gives it). W = 1..8, buffer
// sizes W does not divide, buckets of 0, 1 and many elements, crossing several shards.
TEST(Collective, ReducePiecesGiveEachRankItsShard) {
  std::mt19937 rng(16);
  for (int world = 1; world <= 8; world++)
    for (size_t n : {size_t(1), size_t(7), size_t(64), size_t(950), size_t(1003)}) {
      std::vector<size_t> cuts = {0, n};  // random bucket bounds, an empty bucket among them
      for (int k = 0; k < 6; k++) cuts.push_back(std::uniform_int_distribution<size_t>(0, n)(rng));
      std::sort(cuts.begin(), cuts.end());
      std::vector<size_t> owner(n, size_t(world));  // the root that receives each element
      for (size_t b = 0; b + 1 < cuts.size(); b++) {
        const ShardRange bucket{cuts[b], cuts[b + 1] - cuts[b]};
        size_t next = bucket.begin;
        int last_root = -1;
        for (const ReducePiece& p : reduce_pieces(bucket, n, world)) {
          ASSERT_EQ(p.range.begin, next) << "W " << world << " n " << n << " bucket " << b;
          ASSERT_GT(p.range.count, 0u);
          ASSERT_GT(p.root, last_root);
          const ShardRange shard = shard_range(n, p.root, world);
          ASSERT_TRUE(p.range.begin >= shard.begin && p.range.end() <= shard.end())
              << "W " << world << " n " << n << " piece [" << p.range.begin << ", " << p.range.end() << ") root "
              << p.root;
          for (size_t i = p.range.begin; i < p.range.end(); i++) owner[i] = size_t(p.root);
          next = p.range.end();
          last_root = p.root;
        }
        ASSERT_EQ(next, bucket.end()) << "W " << world << " n " << n << " bucket " << b;
      }
      for (int r = 0; r < world; r++) {
        const ShardRange shard = shard_range(n, r, world);
        for (size_t i = shard.begin; i < shard.end(); i++) ASSERT_EQ(owner[i], size_t(r)) << "W " << world << " n " << n;
      }
    }
  // By hand: 10 elements over 4 ranks are shards of 3, 3, 3, 1; [2, 8) is [2, 3) to 0, [3, 6) to 1, [6, 8) to 2.
  const std::vector<ReducePiece> p = reduce_pieces({2, 6}, 10, 4);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].range.begin, 2u);
  EXPECT_EQ(p[0].range.count, 1u);
  EXPECT_EQ(p[0].root, 0);
  EXPECT_EQ(p[1].range.begin, 3u);
  EXPECT_EQ(p[1].range.count, 3u);
  EXPECT_EQ(p[1].root, 1);
  EXPECT_EQ(p[2].range.begin, 6u);
  EXPECT_EQ(p[2].range.count, 2u);
  EXPECT_EQ(p[2].root, 2);
  EXPECT_TRUE(reduce_pieces({9, 0}, 10, 4).empty());
  EXPECT_THROW(reduce_pieces({8, 3}, 10, 4), Error);
}

TEST(Collective, SingleProcessIsTheIdentity) {
  const std::unique_ptr<Collective> one = collective_open_host(DistributedEnv{});
  EXPECT_STREQ(one->backend(), "single");
  EXPECT_EQ(one->world_size(), 1);
  std::vector<float> x = test::random_normal(37, 1.f);
  const std::vector<float> before = x;
  one->reduce_scatter(x.data(), x.size(), ElementType::f32, nullptr);
  one->all_gather(x.data(), x.size(), ElementType::f32, nullptr);
  one->all_reduce(x.data(), x.size(), ElementType::f32, nullptr);
  one->reduce(x.data(), reduce_pieces({3, 20}, x.size(), 1), ElementType::f32, nullptr);
  EXPECT_EQ(x, before);
  double h[2] = {1.5, -2};
  one->all_reduce_host(h, 2, ReduceOp::sum);
  EXPECT_EQ(h[0], 1.5);
  EXPECT_EQ(one->all_gather_host({3, 4}), (std::vector<double>{3, 4}));
  EXPECT_NE(one->split(0), nullptr);
  EXPECT_EQ(one->split(-1), nullptr);
}

TEST(Collective, SeveralProcessesNeedMpi) {
  DistributedEnv slurm;
  slurm.world_size = 4;
  slurm.launcher = "slurm";
  const std::string msg = test::error_message([&] { collective_open_host(slurm); });
  if (collective_have_mpi())
    EXPECT_NE(msg.find("srun --mpi=pmix"), std::string::npos) << msg;
  else
    EXPECT_NE(msg.find("this build has no MPI"), std::string::npos) << msg;
}

DistributedEnv rank_of(int rank, int world, const std::string& job = "77.0") {
  DistributedEnv e;
  e.rank = rank;
  e.world_size = world;
  e.launcher = "slurm";
  e.job_id = job;
  return e;
}

// Rank 0 writes the id after a delay; three ranks waiting for it read the same bytes; rank 0 then removes it.
TEST(Collective, FileRendezvousSharesRankZerosBytes) {
  test::TempDir dir;
  const std::string shared = dir.path + "/rendezvous";
  std::string id(128, '\0');
  for (size_t i = 0; i < id.size(); i++) id[i] = char((i * 37 + 11) & 255);  // every byte value class, NULs too
  std::vector<std::string> got(4);
  std::vector<std::thread> others;
  for (int r = 1; r < 4; r++)
    others.emplace_back([&, r] { got[size_t(r)] = rendezvous_share(shared, rank_of(r, 4), std::string(128, 'x'), 10); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  got[0] = rendezvous_share(shared, rank_of(0, 4), id, 10);
  for (std::thread& t : others) t.join();
  for (int r = 0; r < 4; r++) EXPECT_EQ(got[size_t(r)], id) << "rank " << r;
  EXPECT_TRUE(file_exists(shared + "/stapo-rendezvous-77.0"));
  rendezvous_done(shared, rank_of(1, 4));  // only rank 0 removes it
  EXPECT_TRUE(file_exists(shared + "/stapo-rendezvous-77.0"));
  rendezvous_done(shared, rank_of(0, 4));
  EXPECT_FALSE(file_exists(shared + "/stapo-rendezvous-77.0"));
}

TEST(Collective, FileRendezvousTimesOutNamingTheFile) {
  test::TempDir dir;
  const auto start = std::chrono::steady_clock::now();
  const std::string msg =
      test::error_message([&] { rendezvous_share(dir.path, rank_of(3, 4), std::string(128, '\0'), 0.3); });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(msg.find("rank 3 of 4 waited 0.3 s for rank 0's rendezvous file " + dir.path + "/stapo-rendezvous-77.0"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("shared filesystem"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--collective-timeout"), std::string::npos) << msg;
  EXPECT_GE(waited, 0.3);
  EXPECT_LT(waited, 5.0);
}

// A file of an earlier launch: rank 0 refuses to write over it, and a reader refuses one of another job size.
TEST(Collective, FileRendezvousRefusesAStaleFile) {
  test::TempDir dir;
  rendezvous_share(dir.path, rank_of(0, 2), std::string(128, 'a'), 1);
  std::string msg = test::error_message([&] { rendezvous_share(dir.path, rank_of(0, 2), std::string(128, 'b'), 1); });
  EXPECT_NE(msg.find("stapo-rendezvous-77.0 exists already"), std::string::npos) << msg;
  msg = test::error_message([&] { rendezvous_share(dir.path, rank_of(1, 4), std::string(128, '\0'), 1); });
  EXPECT_NE(msg.find("written by a job of 2 processes, this one has 4"), std::string::npos) << msg;
  write_file_atomic(dir.path + "/stapo-rendezvous-78.0", "stapo-rendezvous 1\nworld 2\nzz\n");
  msg = test::error_message([&] { rendezvous_share(dir.path, rank_of(1, 2, "78.0"), std::string(1, '\0'), 1); });
  EXPECT_NE(msg.find("not a stapo rendezvous file of 1 bytes"), std::string::npos) << msg;
}

}  // namespace
}  // namespace stapo
