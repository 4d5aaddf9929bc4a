// Shard format (data/shard.h): round trip, version/magic/size/tokenizer checks, reference log-probs in place.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "data/shard.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

namespace stapo {
namespace {

using test::random_pairs;
using test::scratch_path;
using test::test_shard_info;

TEST(Shard, RoundTripKeepsEveryPairIdAndHeaderField) {
  auto pairs = random_pairs(57, 40, 30, 5000);
  ShardInfo info = test_shard_info(5000);
  info.truncation = {700, 300, Truncation::keep_start};
  info.pairs_read = 61;
  info.pairs_skipped = 4;
  info.pairs_truncated = 9;
  std::string path = scratch_path("round.bin");
  shard_write(path, info, pairs);

  Shard shard(path);
  ASSERT_EQ(shard.num_pairs(), 57);
  int64_t tokens = 0;
  for (int64_t i = 0; i < shard.num_pairs(); ++i) {
    PairView v = shard.pair(i);
    const TokenizedPair& p = pairs[static_cast<size_t>(i)];
    EXPECT_EQ(std::vector<int32_t>(v.prompt, v.prompt + v.prompt_length), p.prompt) << "pair " << i;
    EXPECT_EQ(std::vector<int32_t>(v.chosen, v.chosen + v.chosen_length), p.chosen) << "pair " << i;
    EXPECT_EQ(std::vector<int32_t>(v.rejected, v.rejected + v.rejected_length), p.rejected) << "pair " << i;
    EXPECT_EQ(std::string(v.id), p.id) << "pair " << i;
    tokens += v.prompt_length + v.chosen_length + v.rejected_length;
  }
  EXPECT_EQ(shard.num_tokens(), tokens);
  EXPECT_EQ(shard.info().tokenizer_hash, info.tokenizer_hash);
  EXPECT_EQ(shard.info().template_name, info.template_name);
  EXPECT_EQ(shard.info().vocab_size, 5000);
  EXPECT_EQ(shard.info().truncation.max_length, 700);
  EXPECT_EQ(shard.info().truncation.max_prompt_length, 300);
  EXPECT_EQ(shard.info().truncation.truncation, Truncation::keep_start);
  EXPECT_EQ(shard.info().pairs_read, 61);
  EXPECT_EQ(shard.info().pairs_skipped, 4);
  EXPECT_EQ(shard.info().pairs_truncated, 9);
  EXPECT_FALSE(shard.has_reference());
  for (int64_t i = 0; i < 2 * shard.num_pairs(); ++i) EXPECT_TRUE(std::isnan(shard.reference_logps()[i]));
}

// Rewrites `bytes` bytes at `offset` of the file.
void patch(const std::string& path, size_t offset, const void* bytes, size_t n) {
  std::string data = read_text_file(path);
  memcpy(data.data() + offset, bytes, n);
  write_file_atomic(path, data);
}

TEST(Shard, RejectsAnotherVersionBadMagicAndTruncation) {
  std::string path = scratch_path("v.bin");
  shard_write(path, test_shard_info(100), random_pairs(5, 4, 4, 100));
  uint32_t version = kShardVersion + 1;
  patch(path, 8, &version, sizeof(version));
  std::string msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find(cat("format version ", kShardVersion + 1)), std::string::npos) << msg;
  EXPECT_NE(msg.find("re-run prepare_data"), std::string::npos) << msg;

  shard_write(path, test_shard_info(100), random_pairs(5, 4, 4, 100));
  patch(path, 0, "GARBAGE!", 8);
  msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("not a stapo data shard"), std::string::npos) << msg;

  shard_write(path, test_shard_info(100), random_pairs(5, 4, 4, 100));
  std::string data = read_text_file(path);
  write_file_atomic(path, data.substr(0, data.size() - 4));
  msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("truncated or corrupt"), std::string::npos) << msg;
}

TEST(Shard, RejectsAMismatchedTokenizer) {
  std::string path = scratch_path("t.bin");
  shard_write(path, test_shard_info(100), random_pairs(3, 4, 4, 100));
  Shard shard(path);
  EXPECT_NO_THROW(shard.check_tokenizer("sha256:test-tokenizer"));
  std::string msg = test::error_message([&] { shard.check_tokenizer("sha256:other"); });
  EXPECT_NE(msg.find("different tokenizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sha256:other"), std::string::npos) << msg;
}

TEST(Shard, WriterRejectsIdsOutsideTheVocabularyAndEmptyResponses) {
  auto pairs = random_pairs(3, 4, 4, 100);
  pairs[1].chosen[0] = 100;
  std::string msg = test::error_message([&] { shard_write(scratch_path("x.bin"), test_shard_info(100), pairs); });
  EXPECT_NE(msg.find("pair 1 holds token id 100"), std::string::npos) << msg;
  pairs[1].chosen.clear();
  msg = test::error_message([&] { shard_write(scratch_path("x.bin"), test_shard_info(100), pairs); });
  EXPECT_NE(msg.find("pair 1 has an empty"), std::string::npos) << msg;
}

// The streaming writer leaves nothing behind when it stops early (a bad pair, an error upstream), and nothing
// under the final name; finishing removes its temporary token file.
TEST(Shard, WriterLeavesNoFileUnlessFinished) {
  test::TempDir dir;
  const std::string path = dir.path + "/s.bin";
  auto files_in = [&] {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path)) names.push_back(entry.path().filename());
    return names;
  };
  auto pairs = random_pairs(4, 4, 4, 100);
  {
    ShardWriter writer(path, 100);
    writer.add(pairs[0]);
    pairs[1].rejected[0] = -1;
    EXPECT_NE(test::error_message([&] { writer.add(pairs[1]); }).find("pair 1 holds token id -1"), std::string::npos);
  }
  EXPECT_TRUE(files_in().empty()) << files_in()[0];
  {
    ShardWriter writer(path, 100);
    for (int i : {0, 2, 3}) writer.add(pairs[i]);
    writer.finish(test_shard_info(100));
  }
  EXPECT_EQ(files_in(), std::vector<std::string>{"s.bin"});
  EXPECT_EQ(Shard(path).num_pairs(), 3);
}

TEST(Shard, ReferenceLogpsAreWrittenInPlaceByRangesThenMarkedComplete) {
  std::string path = scratch_path("ref.bin");
  auto pairs = random_pairs(10, 6, 6, 300);
  shard_write(path, test_shard_info(300), pairs);
  std::string tokens_before;
  {
    Shard s(path);
    tokens_before.assign(reinterpret_cast<const char*>(s.pair(0).prompt), s.num_tokens() * 4);
  }
  auto values = test::random_uniform(20, -300.f, -1.f);
  // Two "ranks" write their halves; marking before the second half lands must fail, naming the pair.
  shard_write_reference_logps(path, 0, std::vector<float>(values.begin(), values.begin() + 8));
  std::string msg = test::error_message([&] { shard_mark_reference_complete(path, "policy-init"); });
  EXPECT_NE(msg.find("pair 4 (chosen) was never written"), std::string::npos) << msg;
  shard_write_reference_logps(path, 4, std::vector<float>(values.begin() + 8, values.end()));
  shard_mark_reference_complete(path, "policy-init");

  Shard shard(path);
  EXPECT_TRUE(shard.has_reference());
  EXPECT_EQ(shard.reference_tag(), "policy-init");
  EXPECT_TRUE(test::all_close(shard.reference_logps(), values.data(), 20, 0, 0));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(shard.pair(0).prompt), shard.num_tokens() * 4), tokens_before);

  msg = test::error_message([&] { shard_write_reference_logps(path, 9, {1.f, 2.f, 3.f, 4.f}); });
  EXPECT_NE(msg.find("do not fit the 10 pairs"), std::string::npos) << msg;
  msg = test::error_message([&] { shard_write_reference_logps(path, 0, {NAN, 1.f}); });
  EXPECT_NE(msg.find("pair 0 (chosen) is nan"), std::string::npos) << msg;
}

// Offsets and lengths read from the file are compared as differences: a pair whose token or id offset makes
// offset + length wrap around 2^64 is refused naming the pair, not read out of bounds.
TEST(Shard, WrappingOffsetsAreRefusedNamingThePair) {
  const std::string path = scratch_path("wrap.bin");
  for (size_t field : {size_t{0}, size_t{24}}) {  // pair 0's token_offset, then its id_offset
    shard_write(path, test_shard_info(100), random_pairs(4, 4, 4, 100));
    const uint64_t wraps = ~uint64_t{0} - 1;
    patch(path, 512 + field, &wraps, sizeof(wraps));
    std::string msg = test::error_message([&] { Shard s(path); });
    EXPECT_NE(msg.find("pair 0 points outside the file"), std::string::npos) << msg;
  }
  shard_write(path, test_shard_info(100), random_pairs(4, 4, 4, 100));
  const int64_t pairs = int64_t{1} << 59;  // × 32 bytes wraps to 0
  patch(path, 16, &pairs, sizeof(pairs));
  std::string msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("overflows 64 bits"), std::string::npos) << msg;
}

// An id outside the vocabulary is found when the shard is opened, naming the shard, the pair and the id; any
// other changed byte is caught by a checksum (content, tokens, stored reference log-probs).
TEST(Shard, OutOfVocabularyIdsAndChangedBytesAreFoundAtLoad) {
  const std::string path = scratch_path("oov.bin");
  auto pairs = random_pairs(6, 5, 5, 100);
  pairs[3].id = "p3";
  shard_write(path, test_shard_info(100), pairs);
  uint64_t at = 0;  // the file offset of pair 3's first chosen token
  {
    Shard s(path);
    const uint64_t tokens_offset = std::filesystem::file_size(path) - uint64_t(s.num_tokens()) * 4;
    at = tokens_offset + uint64_t(s.pair(3).chosen - s.pair(0).prompt) * 4;
  }
  const std::string original = read_text_file(path);
  const int32_t oov = 100;
  patch(path, at, &oov, sizeof(oov));
  std::string msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find(path + ": pair 3 (id \"p3\") holds token id 100"), std::string::npos) << msg;

  write_file_atomic(path, original);
  const int32_t other = pairs[3].chosen[0] == 7 ? 8 : 7;  // still inside the vocabulary
  patch(path, at, &other, sizeof(other));
  msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("checksum of the tokens"), std::string::npos) << msg;

  write_file_atomic(path, original);
  patch(path, 48, "\xa5", 1);  // pairs_read, a header field only the content checksum covers
  msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("checksum of the header"), std::string::npos) << msg;

  write_file_atomic(path, original);
  shard_write_reference_logps(path, 0, test::random_uniform(12, -50.f, -1.f));
  shard_mark_reference_complete(path, "model-a");
  EXPECT_TRUE(Shard(path).has_reference());
  const float changed = -3.f;
  patch(path, 512 + 6 * 32 + 4, &changed, sizeof(changed));
  msg = test::error_message([&] { Shard s(path); });
  EXPECT_NE(msg.find("stored reference log-probs"), std::string::npos) << msg;
  // Rewriting the values clears the flag until the pass is marked complete again.
  shard_write_reference_logps(path, 0, test::random_uniform(12, -50.f, -1.f, 1));
  EXPECT_FALSE(Shard(path).has_reference());
  shard_mark_reference_complete(path, "model-b");
  EXPECT_EQ(Shard(path).reference_tag(), "model-b");
}

}  // namespace
}  // namespace stapo
