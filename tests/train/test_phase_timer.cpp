// The host part of the per-phase step breakdown (train/phase_timer.h): intervals summed per phase, bad input
// refused, the table, and the phase names equal to dev/bench/torch_baseline.py's PHASES (the two breakdowns
// are compared row by row in docs/benchmarks.md). The CUDA-event part (train/cuda_phase_timer.h) runs in
// gpu_step --phases on a GPU.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"
#include "train/phase_timer.h"

namespace stapo {
namespace {

TEST(PhaseTimer, SumsIntervalsPerPhaseOverSteps) {
  PhaseTotals totals;
  add_step(totals, {Phase::other, Phase::matmul_forward, Phase::attention_forward, Phase::matmul_forward},
           {0.5f, 2.0f, 3.25f, 1.0f});
  add_step(totals, {Phase::matmul_forward, Phase::optimizer}, {4.0f, 0.75f});
  EXPECT_EQ(totals.steps, 2);
  EXPECT_DOUBLE_EQ(totals.ms[(int)Phase::matmul_forward], 7.0);
  EXPECT_DOUBLE_EQ(totals.ms[(int)Phase::attention_forward], 3.25);
  EXPECT_DOUBLE_EQ(totals.ms[(int)Phase::optimizer], 0.75);
  EXPECT_DOUBLE_EQ(totals.ms[(int)Phase::other], 0.5);
  EXPECT_DOUBLE_EQ(totals.ms[(int)Phase::embedding], 0.0);
  EXPECT_DOUBLE_EQ(totals.step_ms, 11.5);
}

TEST(PhaseTimer, RefusesMismatchedOrNegativeIntervals) {
  PhaseTotals totals;
  EXPECT_THROW(add_step(totals, {Phase::other, Phase::optimizer}, {1.0f}), Error);
  EXPECT_THROW(add_step(totals, {Phase::other}, {-0.5f}), Error);
  EXPECT_THROW(phase_table(PhaseTotals{}), Error);  // no step recorded
}

TEST(PhaseTimer, TableGivesMsPerStepAndShare) {
  PhaseTotals totals;
  add_step(totals, {Phase::attention_forward, Phase::attention_backward}, {1.0f, 3.0f});
  add_step(totals, {Phase::attention_forward, Phase::attention_backward}, {1.0f, 3.0f});
  const std::string table = phase_table(totals);
  EXPECT_NE(table.find("| attention_forward | 1.000 | 25.0 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| attention_backward | 3.000 | 75.0 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| embedding | 0.000 | 0.0 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| step | 4.000 | 100.0 |"), std::string::npos) << table;
}

TEST(PhaseTimer, NamesMatchTorchBaseline) {
  const std::string script = read_text_file(std::string(STAPO_SOURCE_DIR) + "/dev/bench/torch_baseline.py");
  std::smatch list;
  ASSERT_TRUE(std::regex_search(script, list, std::regex(R"(PHASES = \(([^)]*)\))")))
      << "dev/bench/torch_baseline.py: no PHASES = (...) tuple";
  std::vector<std::string> names;
  const std::string body = list[1].str();
  const std::regex quoted("\"([a-z_]+)\"");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), quoted); it != std::sregex_iterator(); ++it)
    names.push_back((*it)[1].str());
  ASSERT_EQ(names.size(), (size_t)PHASE_COUNT);
  for (int i = 0; i < PHASE_COUNT; ++i) EXPECT_EQ(names[i], phase_name((Phase)i)) << "phase " << i;
}

}  // namespace
}  // namespace stapo
