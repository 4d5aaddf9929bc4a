// A real model end to end: SmolLM2-135M-Instruct (Llama, Q4_1/Q8_0 GGUF) from ../shared, converted once by
// our GGUF import, against what transformers and HF tokenizers computed on the same file
// (tests/fixtures/real_model/smollm2.json, dev/reference/make_gguf_fixtures.py --part real):
//   every tensor bit-identical to transformers' fp32 dequantisation (exact checksum + samples);
//   our tokenizer.json's ids on the tokenizer corpus equal HF tokenizers' on transformers' own tokenizer.json;
//   greedy `generate` ids equal transformers' greedy generate;
//   `score` (the binary) and per-token log-probs/entropies within 1e-4 relative of transformers' fp32;
//   one `train_stapo_cpu` step runs and its checkpoint reloads.
// Skipped, with a message, where ../shared is absent (CI has it). The template-rendering comparison
// (chat template vs apply_chat_template) lives with the chat-template tests.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "data/shard.h"            // defines: shard_write
#include "model/generate.h"        // defines: generate
#include "model/gguf_convert.h"    // defines: gguf_convert
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace stapo::test {
namespace {

const char* kGguf = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

// Σ_i bits(x_i)·(2i+1) mod 2^64: exact, and changed by any single differing element (2i+1 is odd).
uint64_t checksum(const float* x, size_t n) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    sum += uint64_t(bits) * (2 * uint64_t(i) + 1);
  }
  return sum;
}

class RealModel : public ::testing::Test {
 protected:
  // Converts the GGUF once for the whole suite (about 8 s on 2 cores) and loads the result.
  static void SetUpTestSuite() {
    fixture_ = json_fixture("real_model/smollm2.json", 1);  // committed: a missing one fails even without shared
    auto gguf = shared_path(kGguf);
    if (!gguf) return;
    dir_ = (std::filesystem::temp_directory_path() / cat("stapo_real_model_", ::getpid())).string();
    std::filesystem::remove_all(dir_);
    gguf_convert(*gguf, dir_ + "/model", GgufConvertOptions{});
    model_ = model_load_hf<float>(dir_ + "/model");
    tokenizer_ = Tokenizer::load(dir_ + "/model");
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "../shared/" << kGguf << " not found (set STAPO_SHARED to the shared/ folder)";
  }

  // The fixture's pairs as a shard tokenized by the converted tokenizer (so score/train accept it).
  static std::string write_pairs_shard() {
    std::vector<TokenizedPair> pairs;
    for (const auto& s : fixture_["score"]) {
      TokenizedPair p;
      p.id = cat("pair-", pairs.size());
      p.prompt = s["prompt_ids"].get<std::vector<int32_t>>();
      p.chosen = s["chosen_ids"].get<std::vector<int32_t>>();
      p.rejected = s["rejected_ids"].get<std::vector<int32_t>>();
      pairs.push_back(p);
    }
    ShardInfo info;
    info.tokenizer_hash = tokenizer_->content_hash();
    info.template_name = "plain";
    info.vocab_size = model_->config().vocab_size;
    const std::string path = dir_ + "/pairs.bin";
    shard_write(path, info, pairs);
    return path;
  }

  static inline std::string dir_;
  static inline nlohmann::json fixture_;
  static inline std::unique_ptr<CpuModel<float>> model_;
  static inline std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(RealModel, TensorsEqualTransformersDequantisation) {
  const auto& tensors = fixture_["tensors"];
  EXPECT_EQ(tensors.size(), model_->parameters().size());  // tied: no lm_head.weight on either side
  for (const Parameter<float>& p : model_->parameters()) {
    ASSERT_TRUE(tensors.contains(p.name)) << p.name << " is not in the fixture";
    const auto& t = tensors[p.name];
    EXPECT_EQ(t["shape"].get<std::vector<int64_t>>(), p.shape) << p.name;
    for (const auto& s : t["samples"])
      EXPECT_EQ(p.data[s[0].get<size_t>()], s[1].get<float>()) << p.name << "[" << s[0] << "]";
    EXPECT_EQ(std::to_string(checksum(p.data, p.numel)), t["checksum"].get<std::string>()) << p.name;
  }
}

TEST_F(RealModel, TokenizerIdsEqualHfTokenizers) {
  const std::vector<nlohmann::json> corpus = read_jsonl(fixture_path("tokenizer/corpus.jsonl"));
  const auto& ids = fixture_["corpus_ids"];
  ASSERT_EQ(corpus.size(), ids.size());
  int mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i].get<std::string>();
    const std::vector<int32_t> ours = tokenizer_->encode(text, /*allow_special=*/true);
    if (ours != ids[i].get<std::vector<int32_t>>() && ++mismatches <= 5)
      ADD_FAILURE() << "corpus line " << i + 1 << " \"" << text << "\" encodes differently";
    if (tokenizer_->decode(ours) != text && ++mismatches <= 5)
      ADD_FAILURE() << "corpus line " << i + 1 << " does not decode back";
  }
  EXPECT_EQ(mismatches, 0) << "of " << corpus.size() << " strings";
}

TEST_F(RealModel, GreedyGenerateEqualsTransformers) {
  SamplingOptions greedy;
  greedy.max_new_tokens = 16;
  for (const auto& g : fixture_["generate"]) {
    const auto prompt = g["prompt_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->encode(g["prompt"].get<std::string>(), true), prompt) << g["prompt"];
    const Generation out = generate(*model_, prompt, {}, greedy);
    EXPECT_EQ(out.ids, g["new_ids"].get<std::vector<int32_t>>())
        << g["prompt"] << " -> ours \"" << tokenizer_->decode(out.ids) << "\", transformers' \""
        << tokenizer_->decode(g["new_ids"].get<std::vector<int32_t>>()) << "\"";
  }
}

TEST_F(RealModel, TokenLogProbsAndEntropiesEqualTransformers) {
  double worst_logp = 0, worst_entropy = 0;
  for (const auto& s : fixture_["score"]) {
    const auto prompt = s["prompt_ids"].get<std::vector<int32_t>>();
    for (const char* side : {"chosen", "rejected"}) {
      const auto response = s[cat(side, "_ids")].get<std::vector<int32_t>>();
      TokenBatch b;
      b.rows = 1;
      b.T = int(prompt.size() + response.size());
      b.tokens = prompt;
      b.tokens.insert(b.tokens.end(), response.begin(), response.end());
      b.targets.assign(b.T, -1);
      for (size_t i = 0; i < response.size(); ++i) b.targets[prompt.size() - 1 + i] = response[i];
      for (int i = 0; i < b.T; ++i) b.positions.push_back(i);
      b.segments.assign(b.T, 0);
      std::vector<float> logp(b.T), entropy(b.T);
      model_->forward(b, logp.data(), entropy.data());
      const std::vector<float> ours_logp(logp.begin() + prompt.size() - 1, logp.end() - 1);
      const std::vector<float> ours_entropy(entropy.begin() + prompt.size() - 1, entropy.end() - 1);
      const auto ref_logp = s[cat(side, "_logp")].get<std::vector<float>>();
      const auto ref_entropy = s[cat(side, "_entropy")].get<std::vector<float>>();
      EXPECT_TRUE(all_close(ours_logp, ref_logp, 1e-4, 1e-4)) << side;
      EXPECT_TRUE(all_close(ours_entropy, ref_entropy, 1e-4, 1e-4)) << side;
      worst_logp = std::max(worst_logp, relative_error(ours_logp.data(), ref_logp.data(), ref_logp.size()));
      worst_entropy = std::max(worst_entropy, relative_error(ours_entropy.data(), ref_entropy.data(), ref_entropy.size()));
    }
  }
  EXPECT_LE(worst_logp, 1e-4);
  EXPECT_LE(worst_entropy, 1e-4);
  RecordProperty("worst_logp_relative_error", cat(worst_logp));
  std::printf("worst relative error vs transformers: log-probs %.3g, entropies %.3g\n", worst_logp, worst_entropy);
}

TEST_F(RealModel, ScoreBinaryEqualsTransformers) {
  const std::string shard = write_pairs_shard();
  const CommandResult r = run_command(cat(STAPO_SOURCE_DIR, "/score --model ", dir_, "/model --data ", shard,
                                          " --out ", dir_, "/scores.jsonl --loss simpo"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> rows = read_jsonl(dir_ + "/scores.jsonl");
  const auto& ref = fixture_["score"];
  ASSERT_EQ(rows.size(), ref.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    for (const char* side : {"chosen", "rejected"}) {
      const auto logp = ref[i][cat(side, "_logp")].get<std::vector<double>>();
      const auto entropy = ref[i][cat(side, "_entropy")].get<std::vector<double>>();
      double S = 0, H = 0;
      for (size_t t = 0; t < logp.size(); ++t) S += logp[t], H += entropy[t];
      EXPECT_EQ(rows[i][cat("len_", side)].get<size_t>(), logp.size()) << "pair " << i;
      EXPECT_NEAR(rows[i][cat("logp_", side)].get<double>(), S, 1e-4 * std::abs(S)) << "pair " << i << " " << side;
      EXPECT_NEAR(rows[i][cat("entropy_", side)].get<double>(), H / logp.size(), 1e-4 * H / logp.size())
          << "pair " << i << " " << side;
    }
  }
}

TEST_F(RealModel, OneTrainingStepRunsAndItsCheckpointReloads) {
  const std::string shard = write_pairs_shard(), run = dir_ + "/run";
  const CommandResult r =
      run_command(cat(STAPO_SOURCE_DIR, "/train_stapo_cpu --model ", dir_, "/model --data ", shard, " --out ", run,
                      " --loss stapo --max-steps 1 --batch-size 3 --lr 1e-4 --warmup-ratio 0 --seed 1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> log = read_jsonl(run + "/log.jsonl");
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log[0]["step"], 1);
  EXPECT_TRUE(std::isfinite(log[0]["loss"].get<double>())) << log[0].dump();
  EXPECT_GT(log[0]["grad_norm"].get<double>(), 0.0) << log[0].dump();
  auto trained = model_load_hf<float>(run + "/final");
  ASSERT_EQ(trained->num_params(), model_->num_params());
  size_t changed = 0;
  for (size_t i = 0; i < trained->num_params(); ++i) {
    ASSERT_TRUE(std::isfinite(trained->param_data()[i])) << "parameter element " << i;
    changed += trained->param_data()[i] != model_->param_data()[i];
  }
  EXPECT_GT(changed, trained->num_params() / 2) << "an AdamW step at lr 1e-4 moves almost every weight";
  EXPECT_TRUE(file_exists(run + "/final/tokenizer.json"));  // the checkpoint carries its tokenizer
  EXPECT_EQ(Tokenizer::load(run + "/final")->content_hash(), tokenizer_->content_hash());
}

}  // namespace
}  // namespace stapo::test
