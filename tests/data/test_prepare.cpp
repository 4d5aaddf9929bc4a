// prepare_data's library path (data/prepare.h) against tests/fixtures/data/expected.json, made by
// dev/reference/make_data_fixtures.py with HF tokenizers + apply_chat_template: every layout, the llama3,
// chatml, llama2 and mistral templates (with and without their own BOS; byte-level and SentencePiece-style
// tokenizers), each truncation path; plus the errors that need a tokenizer.
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "data/pair_tokenize.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

namespace stapo {
namespace {

using json = nlohmann::json;

const json& expected() {
  static const json e = json::parse(read_text_file(test::fixture_path("data/expected.json")));
  return e;
}

// A tokenizer under tests/fixtures/, loaded once.
const Tokenizer& fixture_tokenizer(const std::string& relative = "data/tokenizer") {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto& tokenizer = loaded[relative];
  if (!tokenizer) tokenizer = Tokenizer::load(test::fixture_path(relative));
  return *tokenizer;
}

PrepareConfig config_of(const json& c) {
  PrepareConfig config;
  config.inputs = {test::fixture_path("data/" + c["input"].get<std::string>())};
  config.output = test::scratch_path(c["name"].get<std::string>() + ".bin");
  config.truncation = {c["max_length"].get<int32_t>(), c["max_prompt_length"].get<int32_t>(),
                       truncation_from_name(c["truncation"].get<std::string>())};
  return config;
}

class PrepareFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(PrepareFixture, IdsAndCountsMatchTheHfReference) {
  const json* found = nullptr;
  for (const json& c : expected()["cases"])
    if (c["name"] == GetParam()) found = &c;
  ASSERT_NE(found, nullptr) << "case " << GetParam() << " missing from expected.json";
  const json& c = *found;
  const Tokenizer& tokenizer = fixture_tokenizer(c["tokenizer"]);
  ASSERT_EQ(tokenizer.bos_id(), c["bos_id"].get<int32_t>());
  ASSERT_TRUE(tokenizer.adds_bos_by_default()) << "every fixture tokenizer adds BOS (the double-BOS case)";
  ChatTemplate chat_template = ChatTemplate::by_name(c["template"], tokenizer);
  PrepareConfig config = config_of(c);
  PrepareStats stats = prepare_data(tokenizer, chat_template, config);

  EXPECT_EQ(stats.input.read, c["read"].get<int64_t>());
  EXPECT_EQ(stats.written, c["written"].get<int64_t>());
  EXPECT_EQ(stats.truncated, c["truncated"].get<int64_t>());
  EXPECT_EQ(stats.input.skipped, (c["skipped"].get<std::map<std::string, int64_t>>()));

  Shard shard(config.output);
  EXPECT_NO_THROW(shard.check_tokenizer(tokenizer.content_hash()));
  EXPECT_EQ(shard.info().template_name, chat_template.name());
  EXPECT_EQ(shard.info().pairs_read, stats.input.read);
  EXPECT_EQ(shard.info().pairs_truncated, stats.truncated);
  const json& pairs = c["pairs"];
  ASSERT_EQ(shard.num_pairs(), static_cast<int64_t>(pairs.size()));
  for (int64_t i = 0; i < shard.num_pairs(); ++i) {
    SCOPED_TRACE(cat(GetParam(), " pair ", i));
    PairView v = shard.pair(i);
    const json& want = pairs[static_cast<size_t>(i)];
    EXPECT_EQ(std::string(v.id), want["id"].get<std::string>());
    EXPECT_EQ(std::vector<int32_t>(v.prompt, v.prompt + v.prompt_length), want["prompt"].get<std::vector<int32_t>>());
    EXPECT_EQ(std::vector<int32_t>(v.chosen, v.chosen + v.chosen_length), want["chosen"].get<std::vector<int32_t>>());
    EXPECT_EQ(std::vector<int32_t>(v.rejected, v.rejected + v.rejected_length),
              want["rejected"].get<std::vector<int32_t>>());
    // One BOS first, never two: llama3, llama2 and mistral render it, chatml relies on the tokenizer's
    // add-BOS. Llama 2's template repeats BOS before each later user turn, by design.
    EXPECT_EQ(v.prompt[0], tokenizer.bos_id());
    if (v.prompt_length > 1) {
      EXPECT_NE(v.prompt[1], tokenizer.bos_id());
    }
    if (c["template"] != "llama2") {
      EXPECT_EQ(std::count(v.prompt, v.prompt + v.prompt_length, tokenizer.bos_id()), 1);
    }
    EXPECT_LE(v.prompt_length + std::max(v.chosen_length, v.rejected_length), config.truncation.max_length);
    EXPECT_GE(std::min(v.chosen_length, v.rejected_length), 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, PrepareFixture,
                         ::testing::Values("plain-llama3", "conversational-llama3", "whole-llama3", "plain-chatml",
                                           "plain-llama3-keep_end", "plain-llama3-keep_start",
                                           "conversational-chatml-keep_end", "conversational-llama2",
                                           "conversational-mistral", "whole-llama2", "whole-mistral",
                                           "plain-mistral-keep_end", "plain-llama3-noroom", "plain-llama3-oneroom"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(Prepare, EveryFixtureCaseIsTested) { EXPECT_EQ(expected()["cases"].size(), 14u); }

TEST(Prepare, SeveralFilesInDifferentLayoutsMakeOneShard) {
  PrepareConfig config;
  for (const char* file : {"plain.jsonl", "conversational.jsonl", "whole.jsonl"})
    config.inputs.push_back(test::fixture_path(std::string("data/") + file));
  config.output = test::scratch_path("all.bin");
  ChatTemplate chat_template = ChatTemplate::by_name("llama3", fixture_tokenizer());
  PrepareStats stats = prepare_data(fixture_tokenizer(), chat_template, config);
  Shard shard(config.output);
  int64_t i = 0;
  for (const char* name : {"plain-llama3", "conversational-llama3", "whole-llama3"})
    for (const json& c : expected()["cases"])
      if (c["name"] == name)
        for (const json& want : c["pairs"]) {
          PairView v = shard.pair(i++);
          EXPECT_EQ(std::vector<int32_t>(v.chosen, v.chosen + v.chosen_length),
                    want["chosen"].get<std::vector<int32_t>>());
        }
  EXPECT_EQ(i, shard.num_pairs());
  EXPECT_EQ(stats.written, 26);
}

TEST(Prepare, BadLinesStopWithFileLineAndFieldOrAreCountedWithSkipBad) {
  std::string good = R"({"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Paint."})";
  std::string path = test::write_scratch("bad.jsonl", good + "\n" + R"({"prompt": "p", "chosen": "a", "rejected": "a"})" +
                                                          "\n" + good + "\n");
  PrepareConfig config;
  config.inputs = {path};
  config.output = test::scratch_path("bad.bin");
  ChatTemplate chat_template = ChatTemplate::by_name("llama3", fixture_tokenizer());
  std::string msg = test::error_message([&] { prepare_data(fixture_tokenizer(), chat_template, config); });
  EXPECT_NE(msg.find("bad.jsonl:2: field 'rejected'"), std::string::npos) << msg;
  EXPECT_FALSE(file_exists(config.output)) << "nothing is written when a line is bad";
  config.skip_bad = true;
  PrepareStats stats = prepare_data(fixture_tokenizer(), chat_template, config);
  EXPECT_EQ(stats.input.read, 3);
  EXPECT_EQ(stats.written, 2);
  EXPECT_EQ(stats.input.skipped.at("identical responses"), 1);
  EXPECT_NE(stats.report().find("identical responses: 1"), std::string::npos) << stats.report();
}

TEST(Prepare, AConversationTheTemplateCannotRenderIsABadLine) {
  // Llama 2's template needs user/assistant turns alternating.
  std::string good = R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go away"}]})";
  std::string twice = R"({"prompt": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go away"}]})";
  PrepareConfig config;
  config.inputs = {test::write_scratch("turns.jsonl", good + "\n" + twice + "\n")};
  config.output = test::scratch_path("turns.bin");
  const Tokenizer& tokenizer = fixture_tokenizer("data/sp_legacy");
  ChatTemplate chat_template = ChatTemplate::by_name("llama2", tokenizer);
  std::string msg = test::error_message([&] { prepare_data(tokenizer, chat_template, config); });
  EXPECT_NE(msg.find("turns.jsonl:2: field 'prompt'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[template rejects the conversation]"), std::string::npos) << msg;
  config.skip_bad = true;
  PrepareStats stats = prepare_data(tokenizer, chat_template, config);
  EXPECT_EQ(stats.written, 1);
  EXPECT_EQ(stats.input.skipped.at("template rejects the conversation"), 1);
}

TEST(Prepare, AnEmptyPromptWithoutBosIsABadLine) {
  // The fixture tokenizer without its BOS post-processor, and the plain template: an empty prompt has no
  // token before the response.
  json tokenizer_json = json::parse(read_text_file(test::fixture_path("data/tokenizer/tokenizer.json")));
  tokenizer_json["post_processor"] = nullptr;
  std::string tokenizer_path = test::write_scratch("tokenizer.json", tokenizer_json.dump());
  auto tokenizer = Tokenizer::load(tokenizer_path);
  ASSERT_FALSE(tokenizer->adds_bos_by_default());
  ChatTemplate chat_template = ChatTemplate::by_name("plain", *tokenizer);
  PrepareConfig config;
  config.inputs = {test::write_scratch("e.jsonl", R"({"prompt": "", "chosen": "a", "rejected": "b"})"
                                                  "\n"
                                                  R"({"prompt": "Q", "chosen": "a", "rejected": "b"})"
                                                  "\n")};
  config.output = test::scratch_path("e.bin");
  std::string msg = test::error_message([&] { prepare_data(*tokenizer, chat_template, config); });
  EXPECT_NE(msg.find("e.jsonl:1: field 'prompt'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[empty prompt]"), std::string::npos) << msg;
  config.skip_bad = true;
  PrepareStats stats = prepare_data(*tokenizer, chat_template, config);
  EXPECT_EQ(stats.written, 1);
  EXPECT_EQ(stats.input.skipped.at("empty prompt"), 1);
  Shard shard(config.output);
  EXPECT_NE(shard.pair(0).prompt[0], tokenizer->bos_id()) << "no BOS when neither template nor tokenizer adds one";
}

TEST(Prepare, ATemplateWhoseEndOfTurnTheTokenizerLacksIsAnError) {
  // Llama 2's SentencePiece tokenizer has no <|eot_id|>.
  STAPO_REQUIRE_SHARED(model, "tokenizers/llama2/tokenizer.model");
  auto tokenizer = Tokenizer::load(model);
  std::string msg = test::error_message([&] { PairTokenizer check(*tokenizer, ChatTemplate::by_name("llama3", *tokenizer)); });
  EXPECT_NE(msg.find("'<|eot_id|>', which this tokenizer does not have"), std::string::npos) << msg;
}

}  // namespace
}  // namespace stapo
