// The command-line convention of every stapo binary (CLI11):
//   --help prints usage, with each option's default (its bound variable's value before parsing), and exits 0;
//   an unknown or malformed flag prints a message naming it and exits 2;
//   a stapo::Error from the work itself prints "error: <message>" and exits 1.
//
//   int main(int argc, char** argv) {
//     CLI::App app{"what this binary does"};
//     ... app.add_option(...)
//     STAPO_PARSE_CLI(app, argc, argv);
//     return stapo::run_main([&] { ... });
//   }
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "common/error.h"

namespace stapo {

// Numeric flag checks. CLI::Range lets NaN through (every comparison with NaN is false), so these test the
// accepted interval positively: cli_range is [lo, hi], cli_positive (0, hi]; both refuse NaN and infinities
// unless hi is infinite. A value outside exits 2 naming the flag, like any bad flag.
inline CLI::Validator cli_interval(double lo, double hi, bool lo_open) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return cat("'", text, "' is not a number");
        const bool ok = (lo_open ? v > lo : v >= lo) && v <= hi;
        return ok ? std::string() : cat("value ", text, " is not in ", lo_open ? "(" : "[", lo, ", ", hi, "]");
      },
      cat(lo_open ? "(" : "[", lo, ", ", hi, "]"));
}
inline CLI::Validator cli_range(double lo, double hi) { return cli_interval(lo, hi, false); }
inline CLI::Validator cli_positive(double hi) { return cli_interval(0, hi, true); }

// --threads of the CPU binaries: 0 (OpenMP's default) up to kMaxThreads; OpenMP itself crashes on absurd
// counts (100000 threads exhaust the stacks).
constexpr int kMaxThreads = 1024;
inline CLI::Option* cli_add_threads(CLI::App& app, int& threads, const std::string& help) {
  return app.add_option("--threads", threads, help)->check(CLI::Range(0, kMaxThreads));
}

// Returns -1 when parsing succeeded, else the exit code (0 after --help, 2 on a bad flag).
inline int parse_cli(CLI::App& app, int argc, char** argv) {
  for (CLI::Option* option : app.get_options())  // flags and required options have no default to show
    if (option->get_type_size() != 0 && !option->get_required()) option->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fprintf(stderr, "%s: %s\nRun with --help for the list of flags.\n", app.get_name().c_str(), e.what());
    return 2;
  }
  return -1;
}

template <typename Work>
int run_main(Work&& work) {
  try {
    work();
  } catch (const Error& e) {
    fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fprintf(stderr, "error (unexpected): %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace stapo

#define STAPO_PARSE_CLI(app, argc, argv)                               \
  do {                                                                \
    int stapo_cli_code_ = stapo::parse_cli((app), (argc), (argv));    \
    if (stapo_cli_code_ >= 0) return stapo_cli_code_;                 \
  } while (0)
