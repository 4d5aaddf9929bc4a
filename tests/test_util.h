// Helpers shared by every test: the one tolerance rule, fixtures, ../shared, error messages, temporary
// directories, fresh random inputs.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace stapo::test {

// Per element |out − ref| ≤ atol + rtol·|ref|; prints the first mismatches with their indices.
// A NaN anywhere in out is a mismatch.
::testing::AssertionResult all_close(const float* out, const float* ref, size_t n, double atol, double rtol);
::testing::AssertionResult all_close(const std::vector<float>& out, const std::vector<float>& ref, double atol,
                                     double rtol);

// ‖out − ref‖₂ / ‖ref‖₂ (doubles accumulate).
double relative_error(const float* out, const float* ref, size_t n);
double relative_error(const double* out, const double* ref, size_t n);

// Path of a committed fixture under tests/fixtures/. A missing fixture throws (the test fails):
// fixtures are committed, so absence is a defect, never a skip.
std::string fixture_path(const std::string& relative);

// Path under ../shared (or $STAPO_SHARED) when present; nullopt where a user's clone lacks it.
std::optional<std::string> shared_path(const std::string& relative);

// The message of the stapo::Error that f throws, or "(no error)" (tests check what an error says).
std::string error_message(const std::function<void()>& f);

// A JSON fixture under tests/fixtures/ (as fixture_path finds it); throws unless its "version" is `version`.
nlohmann::json json_fixture(const std::string& relative, int version);

// The rows of a JSON Lines file (blank lines skipped); a missing file or a bad line throws.
std::vector<nlohmann::json> read_jsonl(const std::string& path);

// Runs a shell command (a binary of the repository root, say) with stderr folded into stdout.
struct CommandResult {
  int exit_code = -1;  // -1 when it did not exit normally
  std::string output;
};
CommandResult run_command(const std::string& command);

// A fresh directory under the system temp dir, named after the running test and process; removed with the
// object (also when the test fails).
struct TempDir {
  std::string path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Fresh random inputs, seeded by the test's own name so reruns are reproducible but inputs differ per test.
std::vector<float> random_uniform(size_t n, float lo, float hi, uint64_t salt = 0);
std::vector<float> random_normal(size_t n, float stddev, uint64_t salt = 0);
uint64_t seed_from_test_name(uint64_t salt = 0);

}  // namespace stapo::test

// Skips (visibly: ctest reports "Skipped") when the file under ../shared is absent.
#define STAPO_REQUIRE_SHARED(var, relative)                                                          \
  auto var##_opt = stapo::test::shared_path(relative);                                               \
  if (!var##_opt) GTEST_SKIP() << "../shared/" << (relative)                                         \
                               << " not found (set STAPO_SHARED to the shared/ folder to run this)"; \
  const std::string var = *var##_opt
