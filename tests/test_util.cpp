#include "tests/test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/file_io.h"

#ifndef STAPO_SOURCE_DIR
#error "STAPO_SOURCE_DIR must be defined by the build"
#endif

namespace stapo::test {

::testing::AssertionResult all_close(const float* out, const float* ref, size_t n, double atol, double rtol) {
  size_t bad = 0;
  std::string report;
  for (size_t i = 0; i < n; ++i) {
    double diff = std::fabs(static_cast<double>(out[i]) - ref[i]);
    bool ok = diff <= atol + rtol * std::fabs(static_cast<double>(ref[i]));
    if (!ok || std::isnan(out[i]) != std::isnan(ref[i])) {
      if (bad < 5) report += cat("\n  [", i, "] got ", out[i], " want ", ref[i], " (diff ", diff, ")");
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " elements differ (atol " << atol << ", rtol "
                                       << rtol << ")" << report;
}

::testing::AssertionResult all_close(const std::vector<float>& out, const std::vector<float>& ref, double atol,
                                     double rtol) {
  if (out.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << out.size() << " vs reference " << ref.size();
  return all_close(out.data(), ref.data(), out.size(), atol, rtol);
}

template <typename T>
static double relative_error_impl(const T* out, const T* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(out[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
double relative_error(const float* out, const float* ref, size_t n) { return relative_error_impl(out, ref, n); }
double relative_error(const double* out, const double* ref, size_t n) { return relative_error_impl(out, ref, n); }

std::string fixture_path(const std::string& relative) {
  std::string path = std::string(STAPO_SOURCE_DIR) + "/tests/fixtures/" + relative;
  STAPO_CHECK(std::filesystem::exists(path), "fixture missing: ", path,
              " (fixtures are committed; regenerate with the script in dev/reference/ that names it)");
  return path;
}

std::optional<std::string> shared_path(const std::string& relative) {
  std::string root;
  if (const char* env = std::getenv("STAPO_SHARED"); env && *env)
    root = env;
  else
    root = std::string(STAPO_SOURCE_DIR) + "/../shared";
  std::string path = root + "/" + relative;
  if (!std::filesystem::exists(path)) return std::nullopt;
  return path;
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

nlohmann::json json_fixture(const std::string& relative, int version) {
  const std::string path = fixture_path(relative);
  nlohmann::json j = nlohmann::json::parse(read_text_file(path));
  STAPO_CHECK(j.value("version", -1) == version, path, ": fixture version ", j.value("version", -1), ", this test reads ",
              version, ": regenerate with the script in dev/reference/ that names it");
  return j;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::string text = read_text_file(path);
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) rows.push_back(nlohmann::json::parse(text.substr(pos, end - pos)));
    pos = end + 1;
  }
  return rows;
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  STAPO_CHECK(pipe != nullptr, "cannot run: ", command);
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, got);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

TempDir::TempDir() {
  path = (std::filesystem::temp_directory_path() / cat("stapo_test_", seed_from_test_name(), "_", ::getpid())).string();
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
}
TempDir::~TempDir() { std::filesystem::remove_all(path); }

uint64_t seed_from_test_name(uint64_t salt) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? cat(info->test_suite_name(), ".", info->name()) : "no-test";
  return std::hash<std::string>{}(name) ^ (salt * 0x9E3779B97F4A7C15ull);
}

std::vector<float> random_uniform(size_t n, float lo, float hi, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> random_normal(size_t n, float stddev, uint64_t salt) {
  std::mt19937_64 rng(seed_from_test_name(salt));
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace stapo::test
