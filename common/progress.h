// Progress of long work: step, tokens/s, ETA. On a terminal a live bar redrawn in place; otherwise
// (logs, CI) one plain line every `plain_every_s` seconds and at the end, so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace stapo {

class Progress {
 public:
  Progress(std::string label, int64_t total_steps, FILE* out = stderr, double plain_every_s = 10.0);
  // Reports that `step` (1-based) is done and `tokens` more tokens were processed since the last call.
  // `extra` is appended (e.g. "loss 0.693").
  void update(int64_t step, int64_t tokens, const std::string& extra = "");
  void finish();  // ends a live bar with a newline
  // The text of one report; exposed for tests.
  static std::string format_line(const std::string& label, int64_t step, int64_t total, double tokens_per_s,
                                 double eta_s, const std::string& extra, int bar_width);

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_;
  int64_t total_;
  FILE* out_;
  bool live_;
  double plain_every_s_;
  Clock::time_point start_, last_print_;
  int64_t tokens_total_ = 0;
  int64_t last_step_ = 0;
  bool printed_live_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m07s", "12s"

}  // namespace stapo
