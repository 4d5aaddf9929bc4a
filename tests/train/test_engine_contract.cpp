// The Engine contract (train/engine.h) on the CPU engine, through the checks the CUDA engine's gpu tests run too
// (tests/train/engine_contract.h): results collected over many run_pairs and taken once, and a step with a
// non-finite loss but finite gradients left unapplied.
#include "tests/train/engine_contract.h"
#include "train/cpu_engine.h"

namespace stapo {
namespace {

test::EngineMaker cpu_engine_maker() {
  return [] { return std::make_unique<CpuEngine<float>>(test::engine_test_model(false, 1234)); };
}

TEST(EngineContract, CpuResultsCollectEveryPairUntilTaken) {
  test::TempDir dir;
  test::check_results_collect_every_pair(cpu_engine_maker(), dir.path);
}

TEST(EngineContract, CpuNonFiniteLossSkipsTheUpdate) {
  test::TempDir dir;
  test::check_nonfinite_loss_skips_update(cpu_engine_maker(), dir.path);
}

}  // namespace
}  // namespace stapo
