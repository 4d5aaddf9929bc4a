// Learning-rate schedules (train/lr_schedule.h).
#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace stapo {

LrSchedule lr_schedule_from_name(const std::string& name) {
  if (name == "constant") return LrSchedule::constant;
  if (name == "linear") return LrSchedule::linear;
  if (name == "cosine") return LrSchedule::cosine;
  fail("unknown --lr-schedule '", name, "': use constant, linear or cosine");
}

const char* lr_schedule_name(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::constant: return "constant";
    case LrSchedule::linear: return "linear";
    case LrSchedule::cosine: return "cosine";
  }
  return "?";
}

int64_t lr_warmup_steps(double warmup_ratio, int64_t total_steps) {
  STAPO_CHECK(warmup_ratio >= 0 && warmup_ratio <= 1, "--warmup-ratio must be in [0, 1] (got ", warmup_ratio, ")");
  return int64_t(std::ceil(warmup_ratio * double(total_steps)));
}

double lr_at(LrSchedule schedule, double peak_lr, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < warmup_steps) return peak_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  const double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (schedule) {
    case LrSchedule::constant: return peak_lr;
    case LrSchedule::linear: return peak_lr * std::max(0.0, 1.0 - progress);
    case LrSchedule::cosine: return peak_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return peak_lr;
}

}  // namespace stapo
