// Data parallel on the CPU engine over MPI, run by ctest under `mpirun -np 1/2/4` (tests/train/CMakeLists.txt):
// every rank runs every test, in the same order. In double:
//   - W ranks × grad_accum k give the weights of one rank with grad_accum k·W (≤ 1e-12 relative, every weight,
//     after 3 steps), with ZeRO-1 and without, and the same metrics in the log; the model's parameter count is
//     not a multiple of 4, so at -np 4 the ranks' shards are uneven;
//   - a checkpoint saved at W resumes at W (bitwise), W/2 and 1, and one saved at 1 resumes at W, each equal to
//     the uninterrupted run;
//   - the collectives themselves against their definition, with uneven and empty shards.
// Each rank compares its own copy of the weights (ZeRO-1 all-gathers them), so a wrong shard fails on its rank.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tests/train/train_test_util.h"
#include "train/collective.h"
#include "train/cpu_engine.h"
#include "train/trainer.h"

namespace stapo {
namespace {

Collective* g_world = nullptr;  // MPI_COMM_WORLD's ranks (single under -np 1), set by main

// A model whose parameter count is 950 = 2 · 5² · 19: W = 4 (and 3) do not divide it.
ModelConfig uneven_config() {
  ModelConfig c = test::train_tiny_config(16);
  c.hidden_size = 10;
  c.num_attention_heads = 5;
  c.num_key_value_heads = 1;
  c.head_dim = 2;
  c.intermediate_size = 12;
  c.num_hidden_layers = 1;
  return c;
}

std::string broadcast_string(Collective& ranks, std::string text) {
  uint64_t size = text.size();
  ranks.broadcast_host(&size, sizeof(size), 0);
  text.resize(size);
  ranks.broadcast_host(text.data(), size, 0);
  return text;
}

// A temporary directory every rank of `ranks` uses: rank 0 makes and finally removes it.
struct SharedDir {
  explicit SharedDir(Collective& ranks) : ranks_(ranks) {
    if (ranks.rank() == 0) owner_ = std::make_unique<test::TempDir>();
    path = broadcast_string(ranks, owner_ ? owner_->path : "");
  }
  ~SharedDir() { ranks_.barrier(); }  // nobody reads it any more when rank 0 removes it
  std::string path;

 private:
  Collective& ranks_;
  std::unique_ptr<test::TempDir> owner_;
};

// The initial model (fp64 safetensors: exact) and the shards, written by rank 0.
struct Inputs {
  std::string init, data, eval;
  Inputs(Collective& ranks, const std::string& dir) : init(dir + "/init"), data(dir + "/d.bin"), eval(dir + "/e.bin") {
    if (ranks.rank() == 0) {
      CpuModel<double> model(uneven_config());
      model_init_random(model, 41, 0.3f);
      model_save_hf(model, init, DType::F64);
      test::write_shard(dir, "d.bin", test::make_pairs(48, 16, 13, false), 16, true, 7);
      test::write_shard(dir, "e.bin", test::make_pairs(11, 16, 14, false), 16, true, 8);
    }
    ranks.barrier();
  }
};

struct RunSpec {
  LossKind loss = LossKind::stapo_sigmoid;
  bool zero1 = true;
  int pairs_per_batch = 2;
  int grad_accum = 1;
  int64_t steps = 3;
  int64_t save_every = 0;
  bool eval = false;
  std::string resume;  // a checkpoint directory
};

struct RunResult {
  std::vector<double> weights;
  std::vector<nlohmann::json> log;  // rank 0's log.jsonl (empty on the other ranks)
};

RunResult train(Collective& ranks, const Inputs& in, const RunSpec& spec, const std::string& out) {
  Shard shard(in.data), eval_shard(in.eval);
  PairLoaderConfig lc = test::test_loader_config(spec.pairs_per_batch, 9);
  lc.rank = ranks.rank();
  lc.world_size = ranks.world_size();
  PairLoaderConfig eval_lc = lc;
  eval_lc.shuffle = false;
  PairLoader loader(shard, lc), eval_loader(eval_shard, eval_lc);
  CpuEngine<double> engine(model_load_hf<double>(spec.resume.empty() ? in.init : spec.resume), &ranks, spec.zero1);
  TrainerConfig tc;
  tc.loss = loss_defaults(spec.loss);
  if (spec.loss == LossKind::stapo_sigmoid) tc.loss.alpha = 0.3;  // the NLL term: its token normaliser is global
  tc.lr = 5e-3;
  tc.schedule = LrSchedule::cosine;
  tc.adamw.weight_decay = 0.01;
  tc.max_grad_norm = 0.05;  // below every step's norm here: clipping by the whole model's norm is exercised
  tc.grad_accum = spec.grad_accum;
  tc.max_steps = spec.steps;
  tc.save_every = spec.save_every;
  tc.eval_every = spec.eval ? 2 : 0;
  tc.step0_pairs = 6;  // rank 0's diagnostics, on a single process's pairs
  tc.out_dir = out;
  tc.seed = 9;
  Trainer trainer(engine, loader, spec.eval ? &eval_loader : nullptr, eval_loader.steps_per_epoch(), tc);
  trainer.set_collective(ranks);
  if (!spec.resume.empty()) trainer.resume(spec.resume);
  trainer.train();
  RunResult r;
  CpuModel<double>& m = engine.model();
  r.weights.assign(m.param_data(), m.param_data() + m.num_params());
  if (ranks.rank() == 0) r.log = test::read_jsonl(out + "/log.jsonl");
  return r;
}

// max_i |a_i − b_i| / |b_i| over the weights (none is 0 here: random normal and RMSNorm gains).
double worst_relative(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(std::fabs(b[i]), 1e-300));
  return worst;
}

// Every numeric value of every line of two logs agrees to `tol` relative (tokens_per_s aside: a timing).
void expect_same_log(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b, double tol,
                     const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int compared = 0;
  for (size_t i = 0; i < a.size(); i++)
    for (const auto& [key, value] : b[i].items()) {
      if (!value.is_number() || key == "tokens_per_s") continue;
      ASSERT_TRUE(a[i].contains(key)) << what << ": line " << i << " lacks " << key;
      const double x = a[i][key].get<double>(), y = value.get<double>();
      EXPECT_LE(std::fabs(x - y), tol * std::max(1.0, std::fabs(y))) << what << ": line " << i << " " << key;
      compared++;
    }
  EXPECT_GT(compared, 50) << what;
}

// Rank r of W fills element i with (r + 1)·(i + 1) + 0.5: the sum over ranks is exact in float and in double.
template <typename T>
void collectives_of(Collective& ranks, size_t n) {
  const int W = ranks.world_size(), r = ranks.rank();
  auto mine = [&](size_t i) { return T(double(r + 1) * double(i + 1) + 0.5); };
  auto sum = [&](size_t i) { return T(double(W) * double(W + 1) / 2 * double(i + 1) + 0.5 * W); };
  std::vector<T> a(n);
  for (size_t i = 0; i < n; i++) a[i] = mine(i);
  ranks.all_reduce(a.data(), n, element_type_of<T>(), nullptr);
  for (size_t i = 0; i < n; i++) EXPECT_EQ(a[i], sum(i)) << "all_reduce n " << n << " element " << i;
  for (size_t i = 0; i < n; i++) a[i] = mine(i);
  ranks.reduce_scatter(a.data(), n, element_type_of<T>(), nullptr);
  const ShardRange own = shard_range(n, r, W);
  for (size_t i = own.begin; i < own.end(); i++) EXPECT_EQ(a[i], sum(i)) << "reduce_scatter n " << n << " element " << i;
  for (size_t i = 0; i < n; i++)  // every rank: its own range holds rank-specific values, the rest garbage
    a[i] = i >= own.begin && i < own.end() ? T(1000 * (r + 1) + double(i)) : T(-7);
  ranks.all_gather(a.data(), n, element_type_of<T>(), nullptr);
  for (int owner = 0; owner < W; owner++) {
    const ShardRange s = shard_range(n, owner, W);
    for (size_t i = s.begin; i < s.end(); i++) EXPECT_EQ(a[i], T(1000 * (owner + 1) + double(i))) << "all_gather n " << n;
  }
  // ZeRO-1 bucket by bucket (train/cuda_zero.h's overlap): buckets of n/3, 1 and the rest, last first as the
  // backward completes them, each reduced as reduce_pieces cuts it: every rank's shard as reduce_scatter gives it.
  for (size_t i = 0; i < n; i++) a[i] = mine(i);
  const std::vector<size_t> bounds = {0, n / 3, std::min(n, n / 3 + 1), n};
  for (size_t b = bounds.size() - 1; b-- > 0;)
    ranks.reduce(a.data(), reduce_pieces({bounds[b], bounds[b + 1] - bounds[b]}, n, W), element_type_of<T>(), nullptr);
  for (size_t i = own.begin; i < own.end(); i++) EXPECT_EQ(a[i], sum(i)) << "reduce by pieces n " << n << " element " << i;
}

TEST(DataParallel, CollectivesMatchTheirDefinition) {
  Collective& ranks = *g_world;
  const int W = ranks.world_size(), r = ranks.rank();
  for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(950), size_t(4099)}) {
    collectives_of<float>(ranks, n);
    collectives_of<double>(ranks, n);
  }
  const std::vector<double> values(static_cast<size_t>(r), double(r));  // rank r has r copies of r
  const std::vector<double> all = ranks.all_gather_host(values);
  std::vector<double> expected;
  for (int k = 0; k < W; k++) expected.insert(expected.end(), size_t(k), double(k));
  EXPECT_EQ(all, expected);
  double both[2] = {double(r), -double(r)};
  ranks.all_reduce_host(both, 2, ReduceOp::max);
  EXPECT_EQ(both[0], W - 1);
  EXPECT_EQ(both[1], 0);
  EXPECT_EQ(broadcast_string(ranks, r == 0 ? "from rank 0" : "other"), "from rank 0");
}

// The main check: W ranks ≡ grad_accum W on one rank, for losses whose normalisers differ (StaPO with an
// NLL term over tokens, SimPO's length-normalised reward, DPO against stored reference log-probs), ZeRO-1 on and
// off, and grad_accum 2 on top; metrics and evaluation too.
TEST(DataParallel, RanksEqualGradAccumOnOneRank) {
  Collective& ranks = *g_world;
  const int W = ranks.world_size();
  SharedDir dir(ranks);
  const Inputs in(ranks, dir.path);
  const std::unique_ptr<Collective> single = collective_single();
  const std::string own = cat(dir.path, "/rank", ranks.rank());  // each rank's single-process reference runs
  CpuModel<double> initial(uneven_config());
  model_load_weights(initial, SafetensorsReader(in.init), in.init);
  const std::vector<double> init(initial.param_data(), initial.param_data() + initial.num_params());
  if (W == 4 || W == 3) {
    EXPECT_NE(init.size() % size_t(W), 0u) << "the shards are meant to be uneven";
  }
  double worst = 0;
  for (LossKind loss : {LossKind::stapo_sigmoid, LossKind::simpo, LossKind::dpo})
    for (int accum : {1, 2}) {
      if (accum == 2 && loss != LossKind::stapo_sigmoid) continue;
      RunSpec one;
      one.loss = loss;
      one.grad_accum = accum * W;
      one.eval = loss == LossKind::stapo_sigmoid;
      const std::string name = cat(loss_name(loss), "-accum", accum);
      const RunResult reference = train(*single, in, one, cat(own, "/", name, "-single"));
      EXPECT_GT(worst_relative(reference.weights, init), 1e-4) << name << ": it trained";
      std::vector<double> zero_weights;
      for (bool zero1 : {true, false}) {
        RunSpec spec = one;
        spec.grad_accum = accum;
        spec.zero1 = zero1;
        const std::string label = cat(name, zero1 ? " ZeRO-1" : " unsharded", " at W=", W);
        const RunResult run = train(ranks, in, spec, cat(dir.path, "/", name, zero1 ? "-zero1" : "-zero0"));
        const double err = worst_relative(run.weights, reference.weights);
        EXPECT_LE(err, 1e-12) << label;
        worst = std::max(worst, err);
        if (ranks.rank() == 0) {
          expect_same_log(run.log, reference.log, 1e-12, label);
          printf("%-32s vs grad_accum %d on one rank: worst relative weight difference %.2e\n", label.c_str(),
                 accum * W, err);
        }
        if (zero1) zero_weights = run.weights;
        else EXPECT_LE(worst_relative(run.weights, zero_weights), 1e-12) << label << " vs ZeRO-1";
      }
    }
  if (ranks.rank() == 0)
    printf("W=%d: worst relative difference of any weight after 3 steps: %.2e (%zu parameters)\n", W, worst,
           init.size());
}

// Checkpoints do not depend on the world size: saved at W, resumed at W (bitwise), W/2 and 1; saved at 1, resumed
// at W; each equal to the uninterrupted run. The step's pairs stay B·W (grad_accum makes up for fewer ranks).
TEST(DataParallel, CheckpointResumesOnAnotherWorldSize) {
  Collective& ranks = *g_world;
  const int W = ranks.world_size();
  SharedDir dir(ranks);
  const Inputs in(ranks, dir.path);
  RunSpec base;
  base.pairs_per_batch = 1;
  base.steps = 4;
  base.save_every = 2;
  const RunResult straight = train(ranks, in, base, dir.path + "/straight");
  const std::string checkpoint = dir.path + "/straight/checkpoint-2";
  std::vector<int> sizes{W};
  for (int w : {W / 2, 1})
    if (w >= 1 && std::find(sizes.begin(), sizes.end(), w) == sizes.end()) sizes.push_back(w);
  for (int w : sizes) {
    const std::unique_ptr<Collective> group = ranks.split(ranks.rank() < w ? 0 : -1);
    if (group) {
      RunSpec resume = base;
      resume.grad_accum = W / w;
      resume.resume = checkpoint;
      const RunResult resumed = train(*group, in, resume, cat(dir.path, "/resumed-at-", w));
      const double err = worst_relative(resumed.weights, straight.weights);
      if (w == W) {
        EXPECT_EQ(std::memcmp(resumed.weights.data(), straight.weights.data(), resumed.weights.size() * sizeof(double)),
                  0) << "resumed at the same world size";
      }
      EXPECT_LE(err, 1e-12) << "saved at W=" << W << ", resumed at W=" << w;
      if (ranks.rank() == 0)
        printf("saved at W=%d step 2, resumed at W=%d to step 4: worst relative weight difference %.2e\n", W, w, err);
    }
    ranks.barrier();
  }
  // The reverse: saved by one rank, resumed by all of them.
  RunSpec alone = base;
  alone.grad_accum = W;
  const std::unique_ptr<Collective> first = ranks.split(ranks.rank() == 0 ? 0 : -1);
  if (first) train(*first, in, alone, dir.path + "/alone");
  ranks.barrier();
  RunSpec resume = base;
  resume.resume = dir.path + "/alone/checkpoint-2";
  const RunResult resumed = train(ranks, in, resume, dir.path + "/alone-resumed");
  const double err = worst_relative(resumed.weights, straight.weights);
  EXPECT_LE(err, 1e-12) << "saved at W=1, resumed at W=" << W;
  if (ranks.rank() == 0)
    printf("saved at W=1 step 2, resumed at W=%d to step 4: worst relative weight difference %.2e\n", W, err);
}

}  // namespace
}  // namespace stapo

namespace {

// Ranks other than 0 print only their failures, each naming its rank (rank 0 prints the usual report).
class FailuresOnly : public ::testing::EmptyTestEventListener {
 public:
  explicit FailuresOnly(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      fprintf(stderr, "rank %d: %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
              r.message());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<stapo::Collective> world;
  try {
    world = stapo::collective_open_host(stapo::distributed_env());
  } catch (const stapo::Error& e) {
    fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  stapo::g_world = world.get();
  if (world->rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailuresOnly(world->rank()));
  } else {
    printf("data parallel tests: %d rank(s), %s backend, %d OpenMP thread(s) each\n", world->world_size(),
           world->backend(), omp_get_max_threads());
  }
  double failed = RUN_ALL_TESTS() != 0;
  world->all_reduce_host(&failed, 1, stapo::ReduceOp::max);  // a failure on any rank fails the test
  return failed != 0 ? 1 : 0;
}
