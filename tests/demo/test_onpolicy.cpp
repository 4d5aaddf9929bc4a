// sample_pairs, the demo's on-policy pairs, through the real binaries: a tiny Llama is SFT-trained on the
// synthetic task (make_synthetic_data, prepare_data, train_stapo_cpu --loss sft), then sample_pairs draws its
// replies. Every written pair verifies (chosen passes the task's checker, rejected fails it and is not empty),
// the same seed gives the same bytes (also with another thread count), another seed other pairs.
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "data/synthetic/task.h"
#include "tests/test_util.h"

namespace stapo {
namespace {

void run(const std::string& command) {
  ASSERT_EQ(std::system((command + " 2>/dev/null >/dev/null").c_str()), 0) << command;
}

TEST(SamplePairs, SftModelsPairsVerifyAndRepeat) {
  test::TempDir dir;
  const std::string data = dir.path + "/data", init = dir.path + "/init", sft = dir.path + "/sft";
  run(cat(MAKE_SYNTHETIC_DATA_BIN, " --out ", data, " --pairs 400 --eval 0 --seed 5 --model-out ", init));
  run(cat(PREPARE_DATA_BIN, " --tokenizer ", init, " --template chatml --in ", data, "/train.jsonl --out ", data,
          "/train.shard"));
  run(cat(TRAIN_STAPO_CPU_BIN, " --model ", init, " --data ", data, "/train.shard --out ", sft,
          " --loss sft --epochs 12 --lr 3e-3 --lr-schedule cosine --batch-size 16 --max-length 48 --threads 1",
          " --step0-pairs 0"));
  auto sample = [&](const std::string& out, int seed, int threads) {
    run(cat(SAMPLE_PAIRS_BIN, " --model ", sft, "/final --prompts ", data, "/train.jsonl --out ", out,
            " --samples 8 --template chatml --seed ", seed, " --threads ", threads));
    return read_text_file(out);
  };
  const std::string a = sample(dir.path + "/a.jsonl", 3, 1), b = sample(dir.path + "/b.jsonl", 3, 2);
  const std::string c = sample(dir.path + "/c.jsonl", 4, 1);
  EXPECT_EQ(a, b) << "one seed, other thread count: other pairs";
  EXPECT_NE(a, c) << "another seed gave the same pairs";
  const std::vector<nlohmann::json> pairs = test::read_jsonl(dir.path + "/a.jsonl");
  printf("%zu on-policy pairs from 400 prompts\n", pairs.size());
  ASSERT_GE(pairs.size(), 20u) << "too few pairs to test: the SFT model got (almost) everything right or wrong";
  for (const nlohmann::json& p : pairs) {
    const std::string prompt = p["prompt"], chosen = p["chosen"], rejected = p["rejected"];
    EXPECT_TRUE(synthetic_verify(prompt, chosen)) << prompt << " -> " << chosen;
    EXPECT_FALSE(synthetic_verify(prompt, rejected)) << prompt << " -> " << rejected;
    EXPECT_FALSE(rejected.empty()) << prompt;
  }
}

}  // namespace
}  // namespace stapo
