#include "common/progress.h"

#include <unistd.h>

#include <cmath>

#include "common/error.h"

namespace stapo {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    snprintf(buf, sizeof(buf), "%ldh%02ldm", (long)(s / 3600), (long)(s % 3600 / 60));
  else if (s >= 60)
    snprintf(buf, sizeof(buf), "%ldm%02lds", (long)(s / 60), (long)(s % 60));
  else
    snprintf(buf, sizeof(buf), "%lds", (long)s);
  return buf;
}

Progress::Progress(std::string label, int64_t total_steps, FILE* out, double plain_every_s)
    : label_(std::move(label)),
      total_(total_steps),
      out_(out),
      live_(isatty(fileno(out)) != 0),
      plain_every_s_(plain_every_s),
      start_(Clock::now()),
      last_print_(start_) {}

std::string Progress::format_line(const std::string& label, int64_t step, int64_t total, double tokens_per_s,
                                  double eta_s, const std::string& extra, int bar_width) {
  std::string line = label + " ";
  if (bar_width > 0 && total > 0) {
    int filled = static_cast<int>(static_cast<double>(bar_width) * step / total);
    line += "[" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "] ";
  }
  line += cat("step ", step, "/", total);
  char rate[64];
  snprintf(rate, sizeof(rate), " | %.0f tok/s | ETA %s", tokens_per_s, format_duration(eta_s).c_str());
  line += rate;
  if (!extra.empty()) line += " | " + extra;
  return line;
}

void Progress::update(int64_t step, int64_t tokens, const std::string& extra) {
  tokens_total_ += tokens;
  last_step_ = step;
  auto now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double since_print = std::chrono::duration<double>(now - last_print_).count();
  bool last = step >= total_;
  if (!live_ && !last && since_print < plain_every_s_ && step != 1) return;
  double tokens_per_s = elapsed > 0 ? tokens_total_ / elapsed : 0.0;
  double eta = step > 0 ? elapsed / step * (total_ - step) : NAN;
  std::string line = format_line(label_, step, total_, tokens_per_s, eta, extra, live_ ? 24 : 0);
  if (live_) {
    fprintf(out_, "\r\033[K%s", line.c_str());
    printed_live_ = true;
  } else {
    fprintf(out_, "%s\n", line.c_str());
  }
  fflush(out_);
  last_print_ = now;
}

void Progress::finish() {
  if (live_ && printed_live_) fprintf(out_, "\n");
  printed_live_ = false;
}

}  // namespace stapo
