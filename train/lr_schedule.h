// Learning-rate schedules as transformers' get_{constant,linear,cosine}_schedule_with_warmup:
// the update made at 0-based optimizer step s uses lr_at(s). Warm-up rises linearly from 0 over
// warmup_steps = ceil(warmup_ratio · total_steps) (so the very first update has lr 0 when warm-up is on,
// exactly as HF's Trainer); then constant, linear to 0 at total_steps, or a half cosine to 0.
#pragma once
#include <cstdint>
#include <string>

namespace stapo {

enum class LrSchedule { constant, linear, cosine };

LrSchedule lr_schedule_from_name(const std::string& name);  // "constant" | "linear" | "cosine"
const char* lr_schedule_name(LrSchedule schedule);

int64_t lr_warmup_steps(double warmup_ratio, int64_t total_steps);
double lr_at(LrSchedule schedule, double peak_lr, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace stapo
