// Errors: every failure is a stapo::Error whose message says what went wrong, where (file, line,
// tensor, flag) and what to do. Library code throws; each binary's main() prints and exits 1
// (see common/cli.h), and tests can check the message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace stapo {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<<: cat("tensor ", name, " has ", n, " rows").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace stapo

// Checks a precondition that depends on input (files, flags, shapes); the message is built only on failure.
#define STAPO_CHECK(cond, ...)        \
  do {                                \
    if (!(cond)) stapo::fail(__VA_ARGS__); \
  } while (0)
