#include "tests/data/data_test_util.h"

#include <unistd.h>

#include <filesystem>
#include <random>

#include "common/error.h"
#include "common/file_io.h"
#include "tests/test_util.h"

namespace stapo::test {

std::vector<TokenizedPair> random_pairs(int count, int max_prompt, int max_response, int32_t vocab, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  auto length = [&](int max) { return static_cast<size_t>(1 + rng() % static_cast<uint64_t>(max)); };
  auto ids = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& id : v) id = static_cast<int32_t>(1 + rng() % static_cast<uint64_t>(vocab - 1));
    return v;
  };
  std::vector<TokenizedPair> pairs(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    TokenizedPair& p = pairs[static_cast<size_t>(i)];
    if (rng() % 3 != 0) p.id = cat("pair-", rng() % 100000);
    p.prompt = ids(length(max_prompt));
    p.chosen = ids(length(max_response));
    p.rejected = ids(length(max_response));
  }
  return pairs;
}

ShardInfo test_shard_info(int32_t vocab) {
  ShardInfo info;
  info.tokenizer_hash = "sha256:test-tokenizer";
  info.template_name = "chatml";
  info.vocab_size = vocab;
  info.truncation = {1024, 512, Truncation::keep_end};
  return info;
}

namespace {

std::string scratch_root() {
  return (std::filesystem::temp_directory_path() / cat("stapo_test_data_", getpid())).string();
}

// Removes this process's scratch files once every test has run.
struct ScratchCleanup : ::testing::Environment {
  void TearDown() override { std::filesystem::remove_all(scratch_root()); }
};
const auto* const kScratchCleanup = ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace

std::string scratch_path(const std::string& name) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = cat(scratch_root(), "/", test->test_suite_name(), "_", test->name());
  make_directories(dir);
  return dir + "/" + name;
}

std::string write_scratch(const std::string& name, const std::string& text) {
  std::string path = scratch_path(name);
  write_file_atomic(path, text);
  return path;
}

}  // namespace stapo::test
