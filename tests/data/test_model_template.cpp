// prepare_data with --template auto on a real model folder (SmolLM2-135M-Instruct's tokenizer in ../shared, its
// template in chat_template.jinja), against transformers' apply_chat_template ids for 64 pairs in the three
// layouts (tests/fixtures/tokenizer/smollm2_pairs/, from dev/reference/make_template_fixtures.py): the prompt must
// be exactly apply_chat_template(prompt, add_generation_prompt=True), and prompt + response (which ends with
// <|im_end|>) followed by the template's "\n" exactly apply_chat_template(prompt + [reply]).
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "data/prepare.h"
#include "data/shard.h"
#include "tests/test_util.h"
#include "tokenizer/chat_template.h"

namespace stapo {
namespace {

TEST(PrepareModelTemplate, SmolLM2PairsMatchApplyChatTemplate) {
  STAPO_REQUIRE_SHARED(dir, "models/smollm2-135m-instruct/hf-tokenizer");
  auto expected = test::json_fixture("tokenizer/smollm2_pairs/expected.json", 1);
  auto tokenizer = Tokenizer::load(dir);
  ChatTemplate chat = ChatTemplate::by_name("auto", *tokenizer);
  PrepareConfig config;
  for (const char* file : {"plain.jsonl", "conversational.jsonl", "whole.jsonl"})
    config.inputs.push_back(test::fixture_path(std::string("tokenizer/smollm2_pairs/") + file));
  test::TempDir out;
  config.output = out.path + "/smollm2.bin";
  config.truncation = {4096, 2048, Truncation::keep_end};  // nothing is cut: whole renderings compare
  PrepareStats stats = prepare_data(*tokenizer, chat, config);
  ASSERT_EQ(stats.written, 64);
  ASSERT_EQ(stats.truncated, 0);

  Shard shard(config.output);
  EXPECT_EQ(shard.info().template_name, "model");
  std::map<std::string, const nlohmann::json*> by_file;  // the expected pairs by "file:line"
  for (const auto& p : expected.at("pairs"))
    by_file[p.at("file").get<std::string>() + ":" + std::to_string(p.at("line").get<int>())] = &p;
  const std::vector<int32_t> newline = tokenizer->encode("\n");
  int prompts = 0, chosen = 0, rejected = 0, pair_index = 0;
  for (const char* file : {"plain.jsonl", "conversational.jsonl", "whole.jsonl"}) {
    for (int line = 1; by_file.count(file + (":" + std::to_string(line))); ++line, ++pair_index) {
      const nlohmann::json& e = *by_file[file + (":" + std::to_string(line))];
      PairView p = shard.pair(pair_index);
      std::vector<int32_t> prompt(p.prompt, p.prompt + p.prompt_length);
      prompts += prompt == e.at("prompt").get<std::vector<int32_t>>();
      for (auto [side, ids, length, count] :
           {std::tuple{"chosen_full", p.chosen, p.chosen_length, &chosen},
            std::tuple{"rejected_full", p.rejected, p.rejected_length, &rejected}}) {
        std::vector<int32_t> sequence = prompt;
        sequence.insert(sequence.end(), ids, ids + length);
        sequence.insert(sequence.end(), newline.begin(), newline.end());  // the template's text after the turn
        bool same = sequence == e.at(side).get<std::vector<int32_t>>();
        EXPECT_TRUE(same) << file << ":" << line << " " << side;
        *count += same;
      }
    }
  }
  EXPECT_EQ(pair_index, 64);
  EXPECT_EQ(prompts, 64) << "prompts identical to apply_chat_template";
  EXPECT_EQ(chosen, 64) << "prompt + chosen identical to apply_chat_template";
  EXPECT_EQ(rejected, 64) << "prompt + rejected identical to apply_chat_template";
  printf("SmolLM2, --template auto, 64 pairs: prompt %d/64, prompt+chosen %d/64, prompt+rejected %d/64 identical "
         "to apply_chat_template\n", prompts, chosen, rejected);
}

}  // namespace
}  // namespace stapo
