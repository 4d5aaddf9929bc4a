// JSONL preference input (data/preference_jsonl.h): the three layouts, ids, and each kind of bad line as an
// error naming file, line and field, or with --skip-bad a counted skip.
#include <gtest/gtest.h>

#include "common/error.h"
#include "data/preference_jsonl.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

namespace stapo {
namespace {

struct Read {
  std::vector<std::pair<int64_t, PreferenceRecord>> records;
  ReadCounts counts;
};

Read read_text(const std::string& text, bool skip_bad) {
  std::string path = test::write_scratch("in.jsonl", text);
  Read out;
  preference_file_read(path, skip_bad, out.counts, [&](int64_t line, const PreferenceRecord& r) {
    out.records.emplace_back(line, r);
    return int64_t{0};
  });
  return out;
}

std::string error_of(const std::string& text) {
  return test::error_message([&] { read_text(text, false); });
}

TEST(PreferenceJsonl, PlainStrings) {
  auto r = read_text(
      "{\"prompt\": \"What is 2+2?\", \"chosen\": \"4\", \"rejected\": \"5\", \"id\": \"q1\"}\n"
      "\n"
      "{\"prompt\": \"Name a colour\", \"chosen\": \"blue\", \"rejected\": \"seven\", \"id\": 42, \"score\": 3}\n",
      false);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.counts.read, 2);
  EXPECT_EQ(r.records[0].first, 1);
  EXPECT_EQ(r.records[1].first, 3);
  const PreferenceRecord& a = r.records[0].second;
  ASSERT_EQ(a.prompt.size(), 1u);
  EXPECT_EQ(a.prompt[0].role, "user");
  EXPECT_EQ(a.prompt[0].content, "What is 2+2?");
  EXPECT_EQ(a.chosen, "4");
  EXPECT_EQ(a.rejected, "5");
  EXPECT_EQ(a.id, "q1");
  EXPECT_EQ(r.records[1].second.id, "42");
}

TEST(PreferenceJsonl, TrlConversational) {
  auto r = read_text(
      R"({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},)"
      R"( {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Sky colour?"}],)"
      R"( "chosen": [{"role": "assistant", "content": "Blue."}], "rejected": [{"role": "assistant", "content": "Green."}]})"
      "\n",
      false);
  ASSERT_EQ(r.records.size(), 1u);
  const PreferenceRecord& a = r.records[0].second;
  ASSERT_EQ(a.prompt.size(), 4u);
  EXPECT_EQ(a.prompt[0].role, "system");
  EXPECT_EQ(a.prompt[3].content, "Sky colour?");
  EXPECT_EQ(a.chosen, "Blue.");
  EXPECT_EQ(a.rejected, "Green.");
  EXPECT_EQ(a.id, "");
}

TEST(PreferenceJsonl, WholeConversationsShareTheirPromptTurns) {
  // UltraFeedback-binarized: chosen and rejected repeat the user turn(s); "prompt" is a plain string.
  auto r = read_text(
      R"({"prompt": "Sky colour?", "prompt_id": "ab12", "chosen": [{"role": "user", "content": "Hi"},)"
      R"( {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Sky colour?"},)"
      R"( {"role": "assistant", "content": "Blue."}], "rejected": [{"role": "user", "content": "Hi"},)"
      R"( {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Sky colour?"},)"
      R"( {"role": "assistant", "content": "Green."}], "score_chosen": 8.0, "score_rejected": 3.0})"
      "\n"
      R"({"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],)"
      R"( "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]})",
      false);
  ASSERT_EQ(r.records.size(), 2u);
  const PreferenceRecord& a = r.records[0].second;
  ASSERT_EQ(a.prompt.size(), 3u);
  EXPECT_EQ(a.prompt[1].role, "assistant");
  EXPECT_EQ(a.prompt[2].content, "Sky colour?");
  EXPECT_EQ(a.chosen, "Blue.");
  EXPECT_EQ(a.rejected, "Green.");
  EXPECT_EQ(r.records[1].second.prompt.size(), 1u);
  EXPECT_EQ(r.records[1].second.rejected, "B");
}

// Each bad line: the error names file, line number and field; with skip_bad it is counted by reason.
struct BadCase {
  const char* line;
  const char* field;   // "" when the whole line is at fault
  const char* reason;
};

const std::string kGoodPlain = R"({"prompt": "p", "chosen": "a", "rejected": "b"})";

void expect_bad(const BadCase& c) {
  SCOPED_TRACE(c.line);
  std::string text = kGoodPlain + "\n" + kGoodPlain + "\n" + c.line + "\n" + kGoodPlain + "\n";
  std::string msg = error_of(text);
  EXPECT_NE(msg.find("in.jsonl:3:"), std::string::npos) << msg;
  if (*c.field) {
    EXPECT_NE(msg.find(cat("field '", c.field, "'")), std::string::npos) << msg;
  }
  EXPECT_NE(msg.find(cat("[", c.reason, "]")), std::string::npos) << msg;
  EXPECT_NE(msg.find("--skip-bad"), std::string::npos) << msg;
  auto r = read_text(text, true);
  EXPECT_EQ(r.counts.read, 4);
  EXPECT_EQ(r.records.size(), 3u);
  EXPECT_EQ(r.counts.skipped_total(), 1);
  EXPECT_EQ(r.counts.skipped[c.reason], 1);
}

TEST(PreferenceJsonl, MalformedJson) {
  expect_bad({R"({"prompt": "p", "chosen": "a" "rejected": "b"})", "chosen", "malformed JSON"});
  expect_bad({R"({"prompt": "p", "chosen": "a", "rejected": "b)", "rejected", "malformed JSON"});
  expect_bad({R"(prompt: p, chosen: a)", "", "malformed JSON"});
  std::string conv = R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})";
  std::string msg = error_of(conv + "\n" + R"({"prompt": [{"role": "user", "content": "p"}, {"role": "user" "content": "q"}]})" + "\n");
  EXPECT_NE(msg.find("in.jsonl:2: field 'prompt[1].role' (where parsing stopped)"), std::string::npos) << msg;
}

TEST(PreferenceJsonl, MissingField) {
  expect_bad({R"({"prompt": "p", "chosen": "a"})", "rejected", "missing field"});
  expect_bad({R"({"chosen": "a", "rejected": "b"})", "prompt", "missing field"});
  expect_bad({R"({"prompt": "p", "rejected": "b"})", "chosen", "missing field"});
}

TEST(PreferenceJsonl, WrongType) {
  expect_bad({R"({"prompt": "p", "chosen": "a", "rejected": 7})", "rejected", "wrong type"});
  expect_bad({R"({"prompt": ["p"], "chosen": "a", "rejected": "b"})", "prompt", "wrong type"});
  expect_bad({R"({"prompt": "p", "chosen": 3, "rejected": "b"})", "chosen", "wrong type"});
  expect_bad({R"({"prompt": "p", "chosen": "a", "rejected": "b", "id": [1]})", "id", "wrong type"});
  expect_bad({R"(["p", "a", "b"])", "", "wrong type"});
  // A line in another layout than the file's first record.
  expect_bad({R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}],)"
              R"( "rejected": [{"role": "assistant", "content": "b"}]})",
              "prompt", "wrong type"});
}

TEST(PreferenceJsonl, EmptyResponse) {
  expect_bad({R"({"prompt": "p", "chosen": "", "rejected": "b"})", "chosen", "empty response"});
  expect_bad({R"({"prompt": "p", "chosen": "a", "rejected": " \n "})", "rejected", "empty response"});
}

TEST(PreferenceJsonl, IdenticalChosenAndRejected) {
  expect_bad({R"({"prompt": "p", "chosen": "same", "rejected": "same"})", "rejected", "identical responses"});
}

TEST(PreferenceJsonl, NonUtf8Line) {
  expect_bad({"{\"prompt\": \"p\", \"chosen\": \"caf\xE9\", \"rejected\": \"b\"}", "chosen", "invalid UTF-8"});
  expect_bad({"{\"prompt\": \"\xC0\xAF\", \"chosen\": \"a\", \"rejected\": \"b\"}", "prompt", "invalid UTF-8"});
}

TEST(PreferenceJsonl, BadMessagesNameTheirPath) {
  // A check of `line` after a good first line, which sets the file's layout.
  auto checker = [](const std::string& first) {
    return [first](const std::string& line, const char* field, const char* reason) {
      std::string msg = error_of(first + "\n" + line + "\n");
      EXPECT_NE(msg.find(cat("in.jsonl:2: field '", field, "'")), std::string::npos) << msg;
      EXPECT_NE(msg.find(cat("[", reason, "]")), std::string::npos) << msg;
    };
  };
  auto check = checker(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})");
  check(R"({"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})",
        "prompt[0].content", "missing field");
  check(R"({"prompt": [{"role": "robot", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})",
        "prompt[0].role", "unknown role");
  check(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}], "rejected": [{"role": "assistant", "content": "b"}]})",
        "chosen", "not one assistant message");
  check(R"({"prompt": [], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]})",
        "prompt", "empty prompt");
  check(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "a"}]})",
        "rejected", "identical responses");
  check(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"})",
        "rejected", "wrong type");
  check(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}]})",
        "rejected", "missing field");

  auto check_whole = checker(R"({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]})");
  check_whole(R"({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "other q"}, {"role": "assistant", "content": "b"}]})",
              "chosen", "no shared prompt");
  check_whole(R"({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
              "rejected", "identical responses");
  check_whole(R"({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]})",
              "chosen", "empty response");
  check_whole(R"({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": "b"})",
              "rejected", "wrong type");
}

}  // namespace
}  // namespace stapo
