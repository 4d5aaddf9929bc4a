// Model FLOPs (train/model_flops.h): the counts of a small batch by hand, and the benchmark configuration's
// counts equal to what dev/bench/torch_baseline.py's model_flops_per_step gives for it (the numbers below were
// printed by that function, run alone, on dev/bench/gpu_step_config.json: the two must not drift apart).
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "model/config.h"
#include "tests/train/train_test_util.h"
#include "train/model_flops.h"

namespace stapo {
namespace {

TEST(ModelFlops, CountsOfAPackedAndPaddedBatch) {
  PairBatch b;
  b.tokens.rows = 2;
  b.tokens.T = 6;
  b.tokens.segments = {0, 0, 0, 1, 1, -1, /* row 1 */ 0, 0, 0, 0, -1, -1};
  b.response_sequence = {-1, 0, -1, 1, -1, -1, /* row 1 */ -1, 2, 2, -1, -1, -1};
  const BatchFlopCounts n = batch_flop_counts(b);
  EXPECT_EQ(n.tokens, 9);
  EXPECT_EQ(n.causal_pairs, 3 * 4 / 2 + 2 * 3 / 2 + 4 * 5 / 2);  // sequences of 3, 2 and 4 tokens
  EXPECT_EQ(n.response_rows, 4);
  const ModelConfig c = test::train_tiny_config(100);  // C 16, F 24, 2 layers, H·D 16, Hkv·D 8, V 100
  const double per_token_layer = 2 * 16 * (16 + 2 * 8) + 2 * 16 * 16 + 2 * 3 * 16 * 24;
  const double attention = 2 * 2 * 2 * 16 * 19.0;
  EXPECT_DOUBLE_EQ(batch_forward_flops_needed(c, n), 9 * 2 * per_token_layer + 4 * 2 * 16 * 100 + attention);
  EXPECT_DOUBLE_EQ(batch_forward_flops_all_tokens(c, n), 9 * 2 * per_token_layer + 9 * 2 * 16 * 100 + attention);
}

TEST(ModelFlops, BenchmarkConfigEqualsTorchBaselineFormula) {
  const nlohmann::json bench =
      nlohmann::json::parse(read_text_file(std::string(STAPO_SOURCE_DIR) + "/dev/bench/gpu_step_config.json"));
  const ModelConfig config = config_parse(bench.at("model").dump(), "gpu_step_config.json (model)");
  const int pairs = bench["batch"]["pairs"], seq_len = bench["batch"]["seq_len"], prompt = bench["batch"]["prompt_len"];
  PairBatch b;  // as dev/bench/gpu_step.cpp builds it: one sequence per row, the last seq_len − prompt targets
  b.tokens.rows = 2 * pairs;
  b.tokens.T = seq_len;
  b.tokens.segments.assign((size_t)b.tokens.rows * seq_len, 0);
  b.response_sequence.assign(b.tokens.segments.size(), -1);
  for (int r = 0; r < b.tokens.rows; ++r)
    for (int p = prompt - 1; p + 1 < seq_len; ++p) b.response_sequence[(size_t)r * seq_len + p] = r;
  const BatchFlopCounts n = batch_flop_counts(b);
  EXPECT_DOUBLE_EQ(3 * batch_forward_flops_needed(config, n), 55934969708544.0);
  EXPECT_DOUBLE_EQ(3 * batch_forward_flops_all_tokens(config, n), 62390305554432.0);
}

}  // namespace
}  // namespace stapo
