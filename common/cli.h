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
