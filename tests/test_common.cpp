// common/: errors name the file, atomic writes leave no partial file, progress lines carry step/rate/ETA,
// the CLI convention exits 0/2 as documented.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/cli.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "tests/test_util.h"

namespace {

std::string temp_dir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("stapo_test_" + std::to_string(stapo::test::seed_from_test_name()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(FileIo, MissingFileErrorNamesThePath) {
  try {
    stapo::read_text_file("/nonexistent/dir/config.json");
    FAIL() << "expected an error";
  } catch (const stapo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/config.json"), std::string::npos) << e.what();
  }
}

TEST(FileIo, TruncatedReadNamesFileAndSizes) {
  std::string path = temp_dir() + "/short.bin";
  stapo::write_file_atomic(path, "abc");
  stapo::File file(path, "rb");
  char buffer[8];
  try {
    file.read(buffer, 8);
    FAIL() << "expected an error";
  } catch (const stapo::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("short.bin is truncated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("wanted 8 bytes, got 3"), std::string::npos) << msg;
  }
}

TEST(FileIo, AtomicWriteThenMapRoundTrips) {
  std::string path = temp_dir() + "/data.bin";
  auto values = stapo::test::random_uniform(1000, -1, 1);
  std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  stapo::write_file_atomic(path, bytes);
  stapo::MappedFile map(path);
  ASSERT_EQ(map.size(), bytes.size());
  EXPECT_EQ(0, memcmp(map.data(), bytes.data(), bytes.size()));
  for (auto& entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "temp file left: " << entry.path();
}

TEST(Progress, LineCarriesStepRateAndEta) {
  std::string line = stapo::Progress::format_line("train", 25, 100, 1234.4, 75.0, "loss 0.69", 10);
  EXPECT_EQ(line, "train [##........] step 25/100 | 1234 tok/s | ETA 1m15s | loss 0.69");
  EXPECT_EQ(stapo::format_duration(3725), "1h02m");
  EXPECT_EQ(stapo::format_duration(-1), "?");
}

int parse(std::vector<std::string> args) {
  CLI::App app{"test"};
  int steps = 0;
  app.add_option("--steps", steps, "steps")->check(CLI::PositiveNumber);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  testing::internal::CaptureStdout();
  int code = stapo::parse_cli(app, static_cast<int>(argv.size()), argv.data());
  std::string err = testing::internal::GetCapturedStderr();
  testing::internal::GetCapturedStdout();
  if (code == 2) {
    EXPECT_NE(err.find("--"), std::string::npos) << "message should name the flag: " << err;
  }
  return code;
}

TEST(Cli, HelpExitsZeroBadFlagsExitTwo) {
  EXPECT_EQ(parse({"prog", "--steps", "3"}), -1);
  EXPECT_EQ(parse({"prog", "--help"}), 0);
  EXPECT_EQ(parse({"prog", "--stpes", "3"}), 2);
  EXPECT_EQ(parse({"prog", "--steps", "abc"}), 2);
  EXPECT_EQ(parse({"prog", "--steps", "-4"}), 2);
}

}  // namespace
