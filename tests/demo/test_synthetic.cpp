// The demo's synthetic task (data/synthetic/task.h) and make_synthetic_data: chosen answers all verify,
// rejected ones all fail, the solver and format check on hand-written cases, seeds reproduce the files; the
// tokenizer it writes loads in stapo::Tokenizer and gives transformers' ids and texts, and the prompt ids
// generation uses are the ones the data pipeline trains on.
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "common/file_io.h"
#include "data/pair_tokenize.h"  // defines: PairTokenizer
#include "data/synthetic/task.h"
#include "model/generate_chat.h"  // defines: chat_prompt_ids, reply_stop_ids
#include "tests/test_util.h"

namespace stapo {
namespace {

TEST(SyntheticTask, SolverOnHandWrittenPrompts) {
  EXPECT_EQ(synthetic_solve("37+45="), "82");
  EXPECT_EQ(synthetic_solve("999+999="), "1998");
  EXPECT_EQ(synthetic_solve("0+7="), "7");
  EXPECT_EQ(synthetic_solve("sort 31422"), "12234");
  EXPECT_EQ(synthetic_solve("sort 907"), "079");
  EXPECT_EQ(synthetic_solve("reverse 314"), "413");
  EXPECT_EQ(synthetic_solve("reverse 120000"), "000021");
  for (const char* bad : {"07+1=", "1+2", "1234+1=", "sort 12", "sort 1234567", "reverse 12a", "hello", "+="})
    EXPECT_THROW(synthetic_solve(bad), Error) << bad;
}

TEST(SyntheticTask, AnswerFormat) {
  for (const char* good : {"0", "82", "00123", "12345678"}) EXPECT_TRUE(synthetic_parses(good)) << good;
  for (const char* bad : {"", "123456789", "8 2", "82+", "-1", "sort 123", "82\n"})
    EXPECT_FALSE(synthetic_parses(bad)) << bad;
  EXPECT_TRUE(synthetic_verify("37+45=", "82"));
  EXPECT_FALSE(synthetic_verify("37+45=", "83"));
  EXPECT_FALSE(synthetic_verify("37+45=", "082"));
}

TEST(SyntheticTask, ScoreOfReplies) {
  auto score = [](const char* reply, bool ended) {
    SyntheticScore s = synthetic_score("sort 321", reply, ended);
    return std::make_pair(s.correct, s.degenerate);
  };
  EXPECT_EQ(score("123", true), std::make_pair(true, false));
  EXPECT_EQ(score("132", true), std::make_pair(false, false));  // wrong but well-formed
  EXPECT_EQ(score("12+3", true), std::make_pair(false, true));
  EXPECT_EQ(score("123", false), std::make_pair(false, true));  // right digits, but the turn never ended
}

TEST(SyntheticTask, ChosenVerifyRejectedFail) {
  SyntheticRng rng(test::seed_from_test_name());
  const int n = 20000;
  const double malformed_fraction = 0.3;
  int malformed = 0;
  std::map<std::string, int> tasks;
  for (int i = 0; i < n; ++i) {
    SyntheticPair p = synthetic_pair(rng, malformed_fraction);
    ASSERT_TRUE(synthetic_verify(p.prompt, p.chosen)) << p.prompt << " -> " << p.chosen;
    ASSERT_FALSE(synthetic_verify(p.prompt, p.rejected)) << p.prompt << " -> " << p.rejected;
    ASSERT_FALSE(p.rejected.empty()) << p.prompt;  // the data pipeline rejects empty responses
    ASSERT_EQ(synthetic_parses(p.rejected), !p.rejected_malformed) << p.prompt << " -> " << p.rejected;
    malformed += p.rejected_malformed;
    ++tasks[p.prompt.rfind("sort ", 0) == 0 ? "sort" : p.prompt.rfind("reverse ", 0) == 0 ? "reverse" : "add"];
  }
  EXPECT_NEAR(malformed / double(n), malformed_fraction, 0.02);
  ASSERT_EQ(tasks.size(), 3u);
  for (const auto& [task, count] : tasks) EXPECT_NEAR(count / double(n), 1.0 / 3, 0.02) << task;
}

TEST(SyntheticTask, SameSeedSamePairsOtherSeedOthers) {
  SyntheticRng a(42), b(42), c(43);
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    SyntheticPair pa = synthetic_pair(a, 0.25), pb = synthetic_pair(b, 0.25), pc = synthetic_pair(c, 0.25);
    ASSERT_EQ(pa.prompt + "|" + pa.chosen + "|" + pa.rejected, pb.prompt + "|" + pb.chosen + "|" + pb.rejected);
    differ += pa.prompt != pc.prompt;
  }
  EXPECT_GT(differ, 90);
}

// Runs the real binary.
std::string make_data(const std::string& dir, const std::string& args) {
  std::string command = cat(MAKE_SYNTHETIC_DATA_BIN, " --out ", dir, " ", args, " 2>/dev/null");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return dir;
}
std::string make_data(const std::string& dir, int seed) {
  return make_data(dir, cat("--pairs 500 --eval 60 --seed ", seed));
}

TEST(MakeSyntheticData, FilesVerifyHeldOutIsDisjointAndSeedsReproduce) {
  test::TempDir root;
  std::string a = make_data(root.path + "/a", 7), b = make_data(root.path + "/b", 7), c = make_data(root.path + "/c", 8);
  for (const char* file :
       {"train.jsonl", "eval.jsonl", "eval_prompts.jsonl", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(read_text_file(a + "/" + file), read_text_file(b + "/" + file)) << file << " differs for one seed";
  EXPECT_NE(read_text_file(a + "/train.jsonl"), read_text_file(c + "/train.jsonl"));

  auto train = test::read_jsonl(a + "/train.jsonl"), eval = test::read_jsonl(a + "/eval.jsonl");
  auto prompts = test::read_jsonl(a + "/eval_prompts.jsonl");
  ASSERT_EQ(train.size(), 500u);
  ASSERT_EQ(eval.size(), 60u);
  ASSERT_EQ(prompts.size(), 60u);
  std::set<std::string> held_out;
  for (size_t i = 0; i < eval.size(); ++i) {
    EXPECT_EQ(eval[i]["prompt"], prompts[i]["prompt"]);
    EXPECT_EQ(eval[i]["chosen"], prompts[i]["answer"]);
    EXPECT_TRUE(synthetic_verify(prompts[i]["prompt"].get<std::string>(), prompts[i]["answer"].get<std::string>()));
    held_out.insert(eval[i]["prompt"].get<std::string>());
  }
  EXPECT_EQ(held_out.size(), 60u);
  std::set<std::string> ids;
  for (const auto& j : train) {
    std::string prompt = j["prompt"];
    EXPECT_EQ(held_out.count(prompt), 0u) << prompt << " is held out but in train.jsonl";
    EXPECT_TRUE(synthetic_verify(prompt, j["chosen"].get<std::string>()));
    EXPECT_FALSE(synthetic_verify(prompt, j["rejected"].get<std::string>()));
    ids.insert(j["id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), train.size());
}

// ---- the tokenizer make_synthetic_data writes, against transformers (dev/reference/make_synthetic_fixtures.py) ----

TEST(SyntheticTokenizer, BuilderIsDeterministicAndMatchesFixture) {
  nlohmann::json ref = test::json_fixture("synthetic/hf_reference.json", 1);
  std::string args;
  for (const auto& a : ref["make_synthetic_data_args"]) args += a.get<std::string>() + " ";
  test::TempDir out;
  std::string dir = make_data(out.path, args);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(read_text_file(dir + "/" + file), read_text_file(test::fixture_path(cat("synthetic/", file))))
        << file << " differs from the fixture: rerun dev/reference/make_synthetic_fixtures.py if the builder changed";
}

TEST(SyntheticTokenizer, MatchesTransformers) {
  nlohmann::json ref = test::json_fixture("synthetic/hf_reference.json", 1);
  auto tokenizer = Tokenizer::load(test::fixture_path("synthetic/tokenizer.json"));
  EXPECT_EQ(tokenizer->vocab_size(), ref["vocab_size"].get<int>());
  EXPECT_EQ(tokenizer->eos_id(), ref["eos_token_id"].get<int>());
  EXPECT_FALSE(tokenizer->adds_bos_by_default());
  ChatTemplate chatml = ChatTemplate::by_name("auto", *tokenizer);
  EXPECT_EQ(chatml.name(), "model");  // auto renders the tokenizer_config.json chat_template itself
  ASSERT_GE(ref["cases"].size(), 20u);
  for (const auto& c : ref["cases"]) {
    std::string prompt = c["prompt"], chosen = c["chosen"], rejected = c["rejected"];
    std::vector<ChatMessage> chat = {{"user", prompt}, {"assistant", chosen}};
    auto pieces = chatml.render(chat, false);
    EXPECT_EQ(template_text(pieces), c["chat_text"].get<std::string>());
    std::vector<int32_t> chat_ids = encode_pieces(*tokenizer, pieces);
    EXPECT_EQ(chat_ids, c["chat_ids"].get<std::vector<int32_t>>()) << prompt;
    EXPECT_EQ(tokenizer->encode(c["chat_text"].get<std::string>(), true), chat_ids) << prompt;
    EXPECT_EQ(tokenizer->decode(chat_ids), c["decoded"].get<std::string>());
    EXPECT_EQ(template_text(chatml.render({chat[0]}, true)), c["generation_text"].get<std::string>());
    EXPECT_EQ(chat_prompt_ids(*tokenizer, chatml, {chat[0]}), c["generation_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer->encode(rejected), c["rejected_ids"].get<std::vector<int32_t>>()) << rejected;
    // Answers are spelled digit by digit (the merges only join letters).
    EXPECT_EQ(tokenizer->encode(chosen).size(), chosen.size()) << chosen;
  }
}

TEST(SyntheticTokenizer, GenerationPromptIsWhatTheDataPipelineTrainsOn) {
  auto tokenizer = Tokenizer::load(test::fixture_path("synthetic/tokenizer.json"));
  ChatTemplate chatml = ChatTemplate::by_name("chatml", *tokenizer);
  PairTokenizer pairs(*tokenizer, chatml);
  SyntheticRng rng(test::seed_from_test_name());
  const int32_t end_of_turn = *tokenizer->special_token_id("<|im_end|>");
  ModelConfig config;
  EXPECT_EQ(reply_stop_ids(*tokenizer, chatml, config), std::vector<int32_t>{end_of_turn});
  for (int i = 0; i < 50; ++i) {
    SyntheticPair p = synthetic_pair(rng, 0.25);
    PreferenceRecord record{cat("case-", i), {{"user", p.prompt}}, p.chosen, p.rejected};
    TokenizedPair out;
    ASSERT_FALSE(pairs.tokenize(record, out).has_value()) << p.prompt;
    EXPECT_EQ(out.prompt, chat_prompt_ids(*tokenizer, chatml, record.prompt)) << p.prompt;
    std::vector<int32_t> reply = tokenizer->encode(p.chosen);
    reply.push_back(end_of_turn);  // training teaches the reply to end where generation stops
    EXPECT_EQ(out.chosen, reply) << p.prompt;
  }
}

}  // namespace
}  // namespace stapo
