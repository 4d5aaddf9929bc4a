// Chat templates against transformers' apply_chat_template: the families as code and, through "auto", the
// families' real Jinja templates run by our interpreter (tests/fixtures/tokenizer/chat_templates.json from
// dev/reference/make_tokenizer_fixtures.py), the real SmolLM2 template in ../shared and special-token text in
// contents (jinja_templates.json from dev/reference/make_template_fixtures.py). The rendered text must be
// identical, and the ids identical where the conversation has no special-token text.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "common/error.h"
#include "common/file_io.h"
#include "tests/test_util.h"
#include "tests/tokenizer/fixtures.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_files.h"

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

// "auto" renders the real Jinja template in each fixture tokenizer's tokenizer_config.json: the same text and ids
// as transformers, and the same BOS and end of turn as the family's code.
TEST(ChatTemplate, AutoRendersTheModelsOwnTemplateAsTransformers) {
  auto cases = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/chat_templates.json")));
  std::map<std::string, int> checked_text, checked_ids;
  for (auto [family, dir] : {std::pair{"llama3", "bl_llama3"}, {"llama2", "sp_legacy"}, {"mistral", "sp_metaspace"},
                             {"chatml", "bl_gpt2"}}) {
    auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + dir));
    auto model = ChatTemplate::by_name("auto", *tok);
    auto code = ChatTemplate::by_name(family, *tok);
    EXPECT_EQ(model.name(), "model");
    EXPECT_EQ(model.end_of_turn(), code.end_of_turn()) << family;
    EXPECT_EQ(model.renders_bos(), code.renders_bos()) << family;
    for (const auto& c : cases) {
      if (c.at("template") != family) continue;
      std::string label = std::string(family) + " " + c.at("messages").dump();
      auto messages = messages_of(c.at("messages"));
      std::vector<stapo::TemplatePiece> pieces;
      try {
        pieces = model.render(messages, c.at("add_generation_prompt"));
      } catch (const stapo::Error& e) {
        // The [INST] templates raise where roles do not alternate; the family code throws there too.
        EXPECT_THROW(code.render(messages, c.at("add_generation_prompt")), stapo::Error) << label;
        continue;
      }
      EXPECT_EQ(stapo::template_text(pieces), c.at("text").get<std::string>()) << label;
      ++checked_text[family];
      if (!c.at("ids").is_null()) {
        EXPECT_EQ(stapo::encode_pieces(*tok, pieces), c.at("ids").get<std::vector<int32_t>>()) << label;
        ++checked_ids[family];
      }
    }
    EXPECT_GE(checked_text[family], 10) << family;
    EXPECT_GE(checked_ids[family], 8) << family;
  }
  auto no_config = Tokenizer::load(fixture_path("tokenizer/sp_model"));
  std::string msg = stapo::test::error_message([&] { ChatTemplate::by_name("auto", *no_config); });
  EXPECT_NE(msg.find("the tokenizer has no chat template"), std::string::npos) << msg;
  EXPECT_THROW(ChatTemplate::by_name("vicuna", *no_config), stapo::Error);
}

// Special-token text inside a message is plain text; the template's own special tokens are ids. The expected ids
// are HF tokenizers' (each stretch between the template's specials with split_special_tokens=True).
TEST(ChatTemplate, SpecialTokenTextInContentsStaysText) {
  auto fixture = stapo::test::json_fixture("tokenizer/jinja_templates.json", 1);
  auto tok = Tokenizer::load(fixture_path("tokenizer/bl_gpt2"));
  auto chat = ChatTemplate::by_name("auto", *tok);
  const int32_t im_start = *tok->special_token_id("<|im_start|>"), im_end = *tok->special_token_id("<|im_end|>");
  int checked = 0;
  for (const auto& c : fixture.at("special_text")) {
    auto messages = messages_of(c.at("messages"));
    auto pieces = chat.render(messages, c.at("add_generation_prompt"));
    EXPECT_EQ(stapo::template_text(pieces), c.at("text").get<std::string>());
    std::vector<int32_t> ids = stapo::encode_pieces(*tok, pieces);
    EXPECT_EQ(ids, c.at("ids").get<std::vector<int32_t>>()) << c.at("messages").dump();
    size_t turns = messages.size() + (c.at("add_generation_prompt").get<bool>() ? 1 : 0);
    EXPECT_EQ(static_cast<size_t>(std::count(ids.begin(), ids.end(), im_start)), turns);
    EXPECT_EQ(static_cast<size_t>(std::count(ids.begin(), ids.end(), im_end)), messages.size());
    // transformers' own tokenization of the text reads the contents' special-token text as specials
    EXPECT_NE(ids, tok->encode(stapo::template_text(pieces), true));
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

// The real SmolLM2-135M-Instruct tokenizer folder, as transformers 5 writes it for the GGUF: tokenizer.json with
// "" subword affixes, the template in chat_template.jinja (it adds a default system message).
TEST(ChatTemplate, SmolLM2TemplateMatchesApplyChatTemplate) {
  STAPO_REQUIRE_SHARED(dir, "models/smollm2-135m-instruct/hf-tokenizer");
  auto fixture = stapo::test::json_fixture("tokenizer/jinja_templates.json", 1);
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->config().chat_template_origin, dir + "/chat_template.jinja");
  auto chat = ChatTemplate::by_name("auto", *tok);
  EXPECT_EQ(chat.end_of_turn(), "<|im_end|>");
  EXPECT_TRUE(chat.renders_bos());  // its BOS is <|im_start|>, which every rendering starts with
  EXPECT_FALSE(tok->adds_bos_by_default());
  int checked = 0, with_default_system = 0;
  for (const auto& c : fixture.at("smollm2")) {
    auto messages = messages_of(c.at("messages"));
    auto pieces = chat.render(messages, c.at("add_generation_prompt"));
    EXPECT_EQ(stapo::template_text(pieces), c.at("text").get<std::string>()) << c.at("messages").dump();
    EXPECT_EQ(stapo::encode_pieces(*tok, pieces), c.at("ids").get<std::vector<int32_t>>()) << c.at("messages").dump();
    with_default_system += messages[0].role != "system";
    ++checked;
  }
  EXPECT_EQ(checked, 24);
  EXPECT_GE(with_default_system, 8);
}

// transformers 5 writes the template to chat_template.jinja; it takes the place of tokenizer_config.json's.
TEST(ChatTemplate, ReadsChatTemplateJinja) {
  stapo::test::TempDir dir;
  std::filesystem::copy_file(fixture_path("tokenizer/bl_gpt2/tokenizer.json"), dir.path + "/tokenizer.json");
  std::filesystem::copy_file(fixture_path("tokenizer/bl_gpt2/tokenizer_config.json"),
                             dir.path + "/tokenizer_config.json");
  auto from_config = Tokenizer::load(dir.path);
  EXPECT_EQ(from_config->config().chat_template_origin, dir.path + "/tokenizer_config.json (chat_template)");
  stapo::write_file_atomic(dir.path + "/chat_template.jinja",
                           "{% for m in messages %}{{ bos_token }}[{{ m.role }}] {{ m.content }}\n{% endfor %}\n");
  auto tok = Tokenizer::load(dir.path);
  EXPECT_EQ(tok->config().chat_template_origin, dir.path + "/chat_template.jinja");
  auto chat = ChatTemplate::by_name("auto", *tok);
  EXPECT_EQ(stapo::template_text(chat.render({{"user", "hi"}, {"assistant", "yo"}}, true)),
            "<|endoftext|>[user] hi\n<|endoftext|>[assistant] yo\n");
  EXPECT_TRUE(chat.renders_bos());
  EXPECT_EQ(chat.end_of_turn(), "");  // it writes no special token after a reply: the tokenizer's EOS ends turns

  // A construct outside the subset names the file and line; a raise_exception carries the template's message.
  stapo::write_file_atomic(dir.path + "/chat_template.jinja", "{{ bos_token }}\n{% include 'other.jinja' %}");
  std::string msg = stapo::test::error_message([&] { ChatTemplate::by_name("auto", *Tokenizer::load(dir.path)); });
  EXPECT_EQ(msg.rfind(dir.path + "/chat_template.jinja:2: unsupported Jinja construct '{% include %}'", 0), 0u) << msg;
  stapo::write_file_atomic(dir.path + "/chat_template.jinja",
                           "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                           "{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}");
  auto strict = ChatTemplate::by_name("auto", *Tokenizer::load(dir.path));
  EXPECT_EQ(strict.end_of_turn(), "<|im_end|>");
  msg = stapo::test::error_message([&] { strict.render({{"system", "s"}, {"user", "u"}}, true); });
  EXPECT_NE(msg.find("chat_template.jinja:1: the chat template raised an error: no system role"), std::string::npos)
      << msg;
}

// Checkpoints and model_convert carry every tokenizer file the source folder has.
TEST(ChatTemplate, TokenizerFilesAreCopied) {
  stapo::test::TempDir dir;
  const std::string from = dir.path + "/from", to = dir.path + "/to";
  stapo::make_directories(from);
  stapo::make_directories(to);
  for (const char* name : {"tokenizer.json", "chat_template.jinja", "generation_config.json"})
    stapo::write_file_atomic(from + "/" + name, std::string(name) + " contents");
  stapo::write_file_atomic(from + "/model.safetensors", "not a tokenizer file");
  stapo::write_file_atomic(to + "/tokenizer.json", "stale");
  EXPECT_EQ(stapo::copy_tokenizer_files(from, to),
            (std::vector<std::string>{"tokenizer.json", "chat_template.jinja", "generation_config.json"}));
  EXPECT_EQ(stapo::read_text_file(to + "/tokenizer.json"), "tokenizer.json contents");
  EXPECT_EQ(stapo::read_text_file(to + "/chat_template.jinja"), "chat_template.jinja contents");
  EXPECT_FALSE(stapo::file_exists(to + "/model.safetensors"));
  EXPECT_TRUE(stapo::copy_tokenizer_files(from, from).empty());  // a folder onto itself: nothing to do
  EXPECT_EQ(stapo::kTokenizerFiles.size(), 6u);
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
