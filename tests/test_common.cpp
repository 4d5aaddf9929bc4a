// common/: errors name the file, atomic writes leave no partial file, progress lines carry step/rate/ETA,
// the CLI convention exits 0/2 as documented.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "common/checked.h"
#include "common/checksum.h"
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

// CLI::Range lets NaN through; cli_range and cli_positive do not, nor values outside or infinities.
TEST(Cli, NumericChecksRefuseNanInfinityAndOutOfRange) {
  auto run = [](const char* value, const CLI::Validator& check) {
    CLI::App app{"test"};
    double x = 0;
    app.add_option("--x", x, "x")->check(check);
    std::vector<std::string> args{"prog", "--x", value};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    testing::internal::CaptureStderr();
    const int code = stapo::parse_cli(app, 3, argv.data());
    const std::string err = testing::internal::GetCapturedStderr();
    if (code == 2) {
      EXPECT_NE(err.find("--x"), std::string::npos) << err;
    }
    return code;
  };
  for (const char* bad : {"nan", "-1", "2", "inf", "abc"}) EXPECT_EQ(run(bad, stapo::cli_range(0, 1)), 2) << bad;
  for (const char* good : {"0", "0.5", "1"}) EXPECT_EQ(run(good, stapo::cli_range(0, 1)), -1) << good;
  EXPECT_EQ(run("0", stapo::cli_positive(1)), 2);
  EXPECT_EQ(run("1e-9", stapo::cli_positive(1)), -1);
}

TEST(Checked, SumsAndProductsThatWrapAreErrors) {
  EXPECT_EQ(stapo::checked_add(1, 2, "x"), 3u);
  EXPECT_EQ(stapo::checked_mul(uint64_t{1} << 31, 4, "x"), uint64_t{1} << 33);
  std::string e = stapo::test::error_message([] { stapo::checked_add(~uint64_t{0} - 1, 3, "f.bin: offset"); });
  EXPECT_NE(e.find("f.bin: offset"), std::string::npos) << e;
  EXPECT_NE(e.find("overflows"), std::string::npos) << e;
  e = stapo::test::error_message([] { stapo::checked_mul(uint64_t{1} << 32, uint64_t{1} << 32, "shape"); });
  EXPECT_NE(e.find("overflows"), std::string::npos) << e;
}

TEST(Checksum, PiecesEqualTheWholeAndOneBitChangesIt) {
  auto values = stapo::test::random_uniform(1000, -1, 1);
  const uint64_t whole = stapo::checksum(values.data(), values.size() * 4);
  stapo::Checksum pieces;
  pieces.update(values.data(), 1234);
  pieces.update(reinterpret_cast<const char*>(values.data()) + 1234, values.size() * 4 - 1234);
  EXPECT_EQ(pieces.digest(), whole);
  reinterpret_cast<uint8_t*>(values.data())[777] ^= 1;
  EXPECT_NE(stapo::checksum(values.data(), values.size() * 4), whole);
  EXPECT_EQ(stapo::checksum_hex(0xab).size(), 16u);
}

// A FIFO would block a reader forever, a directory or device is no input: all refused at once, naming the path.
TEST(FileIo, ReadsOnlyRegularFiles) {
  stapo::test::TempDir dir;
  const std::string fifo = dir.path + "/pipe";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& path : {fifo, dir.path}) {
    std::string e = stapo::test::error_message([&] { stapo::read_text_file(path); });
    EXPECT_NE(e.find(path + " is a"), std::string::npos) << e;
    EXPECT_NE(e.find("not a regular file"), std::string::npos) << e;
    e = stapo::test::error_message([&] { stapo::MappedFile map(path); });
    EXPECT_NE(e.find("not a regular file"), std::string::npos) << e;
  }
  EXPECT_NE(stapo::test::error_message([] { stapo::File f("/dev/null", "rb"); }).find("is a device"),
            std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// An output that is an input (also through a symbolic link), a directory or a device is refused, and
// write_file_atomic never replaces a device or a directory.
TEST(FileIo, OutputsNeverReplaceInputsOrNonRegularFiles) {
  stapo::test::TempDir dir;
  const std::string in = dir.path + "/in.jsonl", link = dir.path + "/link.jsonl";
  stapo::write_file_atomic(in, "{}\n");
  std::filesystem::create_symlink(in, link);
  std::string e = stapo::test::error_message([&] { stapo::output_check("--out", link, {in}); });
  EXPECT_NE(e.find("--out " + link + " is the same file as the input " + in), std::string::npos) << e;
  EXPECT_NO_THROW(stapo::output_check("--out", dir.path + "/new.bin", {in}));
  e = stapo::test::error_message([&] { stapo::output_check("--out", "/dev/null", {}); });
  EXPECT_NE(e.find("/dev/null exists and is a device"), std::string::npos) << e;
  e = stapo::test::error_message([&] { stapo::write_file_atomic(dir.path, "x"); });
  EXPECT_NE(e.find("is a directory"), std::string::npos) << e;
  e = stapo::test::error_message([&] { stapo::output_dir_check("--out", dir.path + "/", {dir.path}); });
  EXPECT_NE(e.find("same directory as the input"), std::string::npos) << e;
  e = stapo::test::error_message([&] { stapo::output_dir_check("--out", in, {}); });
  EXPECT_NE(e.find("not a directory"), std::string::npos) << e;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "temp file left: " << entry.path();
}

// A second lock on a run directory is refused while the first lives (flock locks are per open file, so this
// holds inside one process too), and granted once it is released.
TEST(FileIo, DirLockRefusesASecondHolder) {
  stapo::test::TempDir dir;
  {
    stapo::DirLock first(dir.path, "--out");
    std::string e = stapo::test::error_message([&] { stapo::DirLock second(dir.path, "--out"); });
    EXPECT_NE(e.find("--out " + dir.path + " is in use by another run"), std::string::npos) << e;
  }
  EXPECT_NO_THROW(stapo::DirLock again(dir.path, "--out"));
}

}  // namespace
