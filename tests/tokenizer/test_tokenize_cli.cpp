// The `tokenize` binary (repository root, built before this test): all of stdin is the text, ids on one line
// separated by single spaces, --decode gives the text back byte for byte, --template encodes a conversation,
// and errors exit 1 / bad flags 2 with a message.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sys/wait.h>

#include "common/file_io.h"
#include "tests/test_util.h"
#include "tokenizer/chat_template.h"

namespace {

using stapo::test::fixture_path;

struct CliResult {
  int exit_code;
  std::string out;
};

std::string temp_path(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/stapo_tokenize_" + std::to_string(stapo::test::seed_from_test_name());
  stapo::make_directories(dir);
  return dir + "/" + name;
}

// Runs ./tokenize ARGS with `input` on stdin; stderr is folded into out.
CliResult run_tokenize(const std::string& args, const std::string& input) {
  std::string in_path = temp_path("stdin.txt");
  std::ofstream(in_path, std::ios::binary) << input;
  std::string command = std::string(STAPO_SOURCE_DIR) + "/tokenize " + args + " < " + in_path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  std::string out;
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, got);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  return line + "\n";
}

TEST(TokenizeCli, EncodesAllOfStdinAndDecodesBack) {
  const std::string text = "  Hello world,\n\ttab café 東京 🤖 <|eot_id|>\n\n";  // leading/trailing whitespace kept
  for (const char* name : {"bl_llama3", "sp_model", "tiktoken"}) {
    std::string dir = fixture_path(std::string("tokenizer/") + name);
    auto tok = stapo::Tokenizer::load(dir);
    CliResult encoded = run_tokenize("--tokenizer " + dir, text);
    ASSERT_EQ(encoded.exit_code, 0) << encoded.out;
    EXPECT_EQ(encoded.out, ids_line(tok->encode(text))) << name;
    CliResult decoded = run_tokenize("--tokenizer " + dir + " --decode", encoded.out);
    ASSERT_EQ(decoded.exit_code, 0) << decoded.out;
    EXPECT_EQ(decoded.out, text) << name;
    CliResult with_bos = run_tokenize("--tokenizer " + dir + " --bos", text);
    EXPECT_EQ(with_bos.out, std::to_string(tok->bos_id()) + " " + encoded.out) << name;
  }
}

TEST(TokenizeCli, TemplateEncodesTheConversation) {
  std::string dir = fixture_path("tokenizer/bl_llama3");
  std::string messages = temp_path("chat.json");
  std::ofstream(messages) << R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}])";
  auto tok = stapo::Tokenizer::load(dir);
  auto chat = stapo::ChatTemplate::by_name("llama3", *tok);
  auto want = stapo::encode_pieces(*tok, chat.render({{"system", "Be brief."}, {"user", "Hi!"}}, true));
  for (const char* name : {"llama3", "auto"}) {
    CliResult run = run_tokenize("--tokenizer " + dir + " --template " + name + " --messages " + messages + " --bos", "");
    ASSERT_EQ(run.exit_code, 0) << run.out;
    EXPECT_EQ(run.out, ids_line(want)) << name;  // BOS once: the template renders it
  }
}

TEST(TokenizeCli, ErrorsAndBadFlags) {
  std::string dir = fixture_path("tokenizer/sp_model");
  CliResult bad_utf8 = run_tokenize("--tokenizer " + dir, "ab\xFF");
  EXPECT_EQ(bad_utf8.exit_code, 1);
  EXPECT_NE(bad_utf8.out.find("not valid UTF-8"), std::string::npos) << bad_utf8.out;
  CliResult bad_id = run_tokenize("--tokenizer " + dir + " --decode", "1 2 x");
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.out.find("\"x\""), std::string::npos) << bad_id.out;
  CliResult bad_flag = run_tokenize("--tokenizer " + dir + " --no-such-flag", "");
  EXPECT_EQ(bad_flag.exit_code, 2) << bad_flag.out;
  CliResult help = run_tokenize("--help", "");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--template"), std::string::npos) << help.out;
}

}  // namespace
