// Truncation (data/truncate.h): every path of the TRL-style rule, BOS kept, responses never cut to zero.
#include <gtest/gtest.h>

#include <numeric>

#include "common/error.h"
#include "data/truncate.h"

namespace stapo {
namespace {

std::vector<int32_t> range(int32_t first, int n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

TEST(Truncate, APairThatFitsIsUntouched) {
  auto prompt = range(1, 10), chosen = range(100, 6), rejected = range(200, 4);
  auto r = truncate_pair(prompt, chosen, rejected, {16, 8, Truncation::keep_end}, true);
  EXPECT_FALSE(r.prompt_truncated || r.responses_truncated);
  EXPECT_TRUE(r.skip_reason.empty());
  EXPECT_EQ(prompt, range(1, 10));
  EXPECT_EQ(chosen, range(100, 6));
}

TEST(Truncate, KeepEndKeepsTheBosAndThePromptTail) {
  auto prompt = range(1, 10), chosen = range(100, 6), rejected = range(200, 3);
  auto r = truncate_pair(prompt, chosen, rejected, {12, 5, Truncation::keep_end}, true);
  EXPECT_TRUE(r.prompt_truncated);
  EXPECT_FALSE(r.responses_truncated);  // 5 + 6 fits 12
  EXPECT_EQ(prompt, (std::vector<int32_t>{1, 7, 8, 9, 10}));
  EXPECT_EQ(chosen, range(100, 6));
  EXPECT_EQ(rejected, range(200, 3));
}

TEST(Truncate, KeepEndWithoutBosKeepsOnlyTheTail) {
  auto prompt = range(1, 10), chosen = range(100, 6), rejected = range(200, 3);
  truncate_pair(prompt, chosen, rejected, {12, 5, Truncation::keep_end}, false);
  EXPECT_EQ(prompt, range(6, 5));
}

TEST(Truncate, KeepStartKeepsThePromptHead) {
  auto prompt = range(1, 10), chosen = range(100, 6), rejected = range(200, 3);
  auto r = truncate_pair(prompt, chosen, rejected, {12, 5, Truncation::keep_start}, true);
  EXPECT_TRUE(r.prompt_truncated);
  EXPECT_EQ(prompt, range(1, 5));
}

TEST(Truncate, ResponsesAreCutToTheRoomTheShortenedPromptLeaves) {
  auto prompt = range(1, 10), chosen = range(100, 20), rejected = range(200, 5);
  auto r = truncate_pair(prompt, chosen, rejected, {16, 6, Truncation::keep_end}, true);
  EXPECT_TRUE(r.prompt_truncated);
  EXPECT_TRUE(r.responses_truncated);
  EXPECT_EQ(prompt.size(), 6u);
  EXPECT_EQ(chosen, range(100, 10));   // 16 - 6, keeping its start
  EXPECT_EQ(rejected, range(200, 5));  // already shorter than the room
}

TEST(Truncate, AShortPromptIsKeptWholeAndOnlyResponsesAreCut) {
  auto prompt = range(1, 4), chosen = range(100, 20), rejected = range(200, 30);
  auto r = truncate_pair(prompt, chosen, rejected, {16, 8, Truncation::keep_end}, true);
  EXPECT_FALSE(r.prompt_truncated);
  EXPECT_TRUE(r.responses_truncated);
  EXPECT_EQ(prompt, range(1, 4));
  EXPECT_EQ(chosen, range(100, 12));
  EXPECT_EQ(rejected, range(200, 12));
}

TEST(Truncate, OneResponseTokenIsKeptWhenThatIsAllTheRoom) {
  auto prompt = range(1, 15), chosen = range(100, 5), rejected = range(200, 2);
  auto r = truncate_pair(prompt, chosen, rejected, {16, 16, Truncation::keep_end}, true);
  EXPECT_TRUE(r.skip_reason.empty());
  EXPECT_EQ(chosen, range(100, 1));
  EXPECT_EQ(rejected, range(200, 1));
}

TEST(Truncate, AResponseIsNeverCutToZeroTokens) {
  auto prompt = range(1, 16), chosen = range(100, 5), rejected = range(200, 2);
  auto r = truncate_pair(prompt, chosen, rejected, {16, 16, Truncation::keep_end}, true);
  EXPECT_EQ(r.skip_reason, "prompt leaves no room for a response");
  EXPECT_FALSE(chosen.empty());
  EXPECT_FALSE(rejected.empty());
}

TEST(Truncate, FlagsAreChecked) {
  EXPECT_THROW(truncation_check({1, 1, Truncation::keep_end}), Error);
  EXPECT_THROW(truncation_check({16, 17, Truncation::keep_end}), Error);
  EXPECT_THROW(truncation_check({16, 0, Truncation::keep_end}), Error);
  EXPECT_NO_THROW(truncation_check({16, 16, Truncation::keep_end}));
  EXPECT_EQ(truncation_from_name("keep_start"), Truncation::keep_start);
  EXPECT_THROW(truncation_from_name("keep_middle"), Error);
}

}  // namespace
}  // namespace stapo
