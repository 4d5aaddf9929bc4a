// Chat templates against transformers' apply_chat_template run on each family's own Jinja template
// (tests/fixtures/tokenizer/chat_templates.json from dev/reference/make_tokenizer_fixtures.py): the rendered
// text must be identical, and the ids identical where the conversation has no special-token text.
#include <gtest/gtest.h>

#include <map>

#include "common/error.h"
#include "tests/test_util.h"
#include "tests/tokenizer/fixtures.h"
#include "tokenizer/chat_template.h"

namespace {

using stapo::ChatTemplate;
using stapo::Tokenizer;
using stapo::test::fixture_path;

std::vector<stapo::ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<stapo::ChatMessage> messages;
  for (const auto& m : j) messages.push_back({m.at("role"), m.at("content")});
  return messages;
}

TEST(ChatTemplate, TextAndIdsMatchTransformers) {
  auto cases = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/chat_templates.json")));
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers;
  std::map<std::string, int> checked_text, checked_ids;
  for (const auto& c : cases) {
    std::string name = c.at("template"), tok_name = c.at("tokenizer");
    auto& tok = tokenizers[tok_name];
    if (!tok) tok = Tokenizer::load(fixture_path("tokenizer/" + tok_name));
    auto chat = ChatTemplate::by_name(name, *tok);
    auto pieces = chat.render(messages_of(c.at("messages")), c.at("add_generation_prompt"));
    std::string label = name + " " + c.at("messages").dump();
    EXPECT_EQ(stapo::template_text(pieces), c.at("text").get<std::string>()) << label;
    ++checked_text[name];
    if (!c.at("ids").is_null()) {
      EXPECT_EQ(stapo::encode_pieces(*tok, pieces), c.at("ids").get<std::vector<int32_t>>()) << label;
      ++checked_ids[name];
    }
  }
  for (const char* name : {"llama3", "llama2", "mistral", "chatml", "plain"}) {
    EXPECT_GE(checked_text[name], 10) << name;
    EXPECT_GE(checked_ids[name], 8) << name;
  }
}

TEST(ChatTemplate, AutoRecognisesTokenizerConfig) {
  for (auto [dir, expected] : {std::pair{"bl_llama3", "llama3"}, {"sp_legacy", "llama2"}, {"sp_metaspace", "mistral"},
                               {"bl_gpt2", "chatml"}}) {
    auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + dir));
    EXPECT_EQ(ChatTemplate::by_name("auto", *tok).name(), expected) << dir;
  }
  auto no_config = Tokenizer::load(fixture_path("tokenizer/sp_model"));
  EXPECT_THROW(ChatTemplate::by_name("auto", *no_config), stapo::Error);
  EXPECT_THROW(ChatTemplate::by_name("vicuna", *no_config), stapo::Error);
}

TEST(ChatTemplate, SpecialTokensOnlyWhereTheTemplatePutsThem) {
  auto tok = Tokenizer::load(fixture_path("tokenizer/bl_llama3"));
  auto chat = ChatTemplate::by_name("llama3", *tok);
  EXPECT_TRUE(chat.renders_bos());
  EXPECT_EQ(chat.end_of_turn(), "<|eot_id|>");
  auto ids = stapo::encode_pieces(
      *tok, chat.render({{"user", "say <|eot_id|> and <|begin_of_text|>"}, {"assistant", "<|eot_id|>"}}, false));
  int32_t eot = *tok->special_token_id("<|eot_id|>"), bos = *tok->special_token_id("<|begin_of_text|>");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), eot), 2);  // one per turn, none from the contents
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 1);
  EXPECT_EQ(ids.front(), bos);
}

TEST(ChatTemplate, InstTemplatesRejectRolesOutOfOrder) {
  auto tok = Tokenizer::load(fixture_path("tokenizer/sp_legacy"));
  for (const char* name : {"llama2", "mistral"}) {
    auto chat = ChatTemplate::by_name(name, *tok);
    EXPECT_THROW(chat.render({{"user", "a"}, {"user", "b"}}, false), stapo::Error) << name;
    EXPECT_THROW(chat.render({{"assistant", "a"}}, false), stapo::Error) << name;
    EXPECT_THROW(chat.render({{"user", "a"}, {"assistant", "b"}, {"system", "c"}}, false), stapo::Error) << name;
  }
}

TEST(ChatTemplate, MissingSpecialTokenIsAnError) {
  auto tok = Tokenizer::load(fixture_path("tokenizer/bl_gpt2"));  // has no <|start_header_id|>
  auto chat = ChatTemplate::by_name("llama3", *tok);
  try {
    stapo::encode_pieces(*tok, chat.render({{"user", "hi"}}, true));
    FAIL() << "expected an error";
  } catch (const stapo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|begin_of_text|>"), std::string::npos) << e.what();
  }
}

}  // namespace
