#include "train/phase_timer.h"

#include <cstdio>

#include "common/error.h"

namespace stapo {

const char* phase_name(Phase phase) {
  static const char* const names[PHASE_COUNT] = {
      "embedding",      "norm_forward",    "matmul_forward",       "elementwise_forward", "attention_forward",
      "lm_head_loss",   "recompute",       "norm_backward",        "matmul_backward",     "elementwise_backward",
      "attention_backward", "grad_clip",   "optimizer",            "other"};
  const int i = (int)phase;
  STAPO_CHECK(i >= 0 && i < PHASE_COUNT, "phase_name: no phase ", i);
  return names[i];
}

void add_step(PhaseTotals& totals, const std::vector<Phase>& phases, const std::vector<float>& elapsed_ms) {
  STAPO_CHECK(phases.size() == elapsed_ms.size(), "add_step: ", phases.size(), " phases but ", elapsed_ms.size(),
              " intervals");
  for (size_t i = 0; i < phases.size(); ++i) {
    STAPO_CHECK(elapsed_ms[i] >= 0, "add_step: interval ", i, " (", phase_name(phases[i]), ") lasted ",
                elapsed_ms[i], " ms (events out of order?)");
    totals.ms[(int)phases[i]] += elapsed_ms[i];
    totals.step_ms += elapsed_ms[i];
  }
  totals.steps++;
}

std::string phase_table(const PhaseTotals& totals) {
  STAPO_CHECK(totals.steps > 0, "phase_table: no step recorded");
  std::string out = "| phase | ms per step | % of step |\n|---|---:|---:|\n";
  char line[128];
  const double step = totals.step_ms / totals.steps;
  for (int i = 0; i < PHASE_COUNT; ++i) {
    const double ms = totals.ms[i] / totals.steps;
    std::snprintf(line, sizeof(line), "| %s | %.3f | %.1f |\n", phase_name((Phase)i), ms,
                  step > 0 ? 100 * ms / step : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof(line), "| step | %.3f | 100.0 |\n", step);
  return out + line;
}

}  // namespace stapo
