// AdamW, global-norm clipping and the LR schedules against torch.optim.AdamW, clip_grad_norm_ and
// transformers' schedules (tests/fixtures/train/optimizer.json from dev/reference/make_optimizer_fixtures.py).
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tests/test_util.h"
#include "train/adamw.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"

namespace stapo {
namespace {

using nlohmann::json;

TEST(Optimizer, AdamWWithClippingMatchesTorch) {
  json f = test::json_fixture("train/optimizer.json", 1)["adamw"];
  const json& c = f["config"];
  AdamWConfig config;
  config.beta1 = c["beta1"];
  config.beta2 = c["beta2"];
  config.eps = c["eps"];
  config.weight_decay = c["weight_decay"];
  // tensor 0 decays, tensor 1 plays an RMSNorm weight (no decay)
  std::vector<std::vector<double>> params = {f["initial"][0].get<std::vector<double>>(),
                                             f["initial"][1].get<std::vector<double>>()};
  std::vector<std::vector<double>> m = {std::vector<double>(params[0].size()), std::vector<double>(params[1].size())};
  auto v = m;
  for (size_t step = 0; step < f["grads"].size(); step++) {
    std::vector<std::vector<double>> grads = {f["grads"][step][0].get<std::vector<double>>(),
                                              f["grads"][step][1].get<std::vector<double>>()};
    const double norm = std::sqrt(grad_sum_squares(grads[0].data(), grads[0].size()) +
                                  grad_sum_squares(grads[1].data(), grads[1].size()));
    EXPECT_NEAR(norm, f["grad_norms"][step].get<double>(), 1e-12 * norm);
    const double scale = grad_clip_factor(norm, c["max_norm"]);
    for (int t = 0; t < 2; t++)
      adamw_update(params[t].data(), grads[t].data(), m[t].data(), v[t].data(), params[t].size(), c["lr"],
                   t == 0 ? config.weight_decay : 0.0, config, int64_t(step + 1), scale);
  }
  for (int t = 0; t < 2; t++) {
    std::vector<double> ref = f["final"][t].get<std::vector<double>>();
    EXPECT_LE(test::relative_error(params[t].data(), ref.data(), ref.size()), 1e-12) << "tensor " << t;
    std::vector<double> initial = f["initial"][t].get<std::vector<double>>();
    EXPECT_GT(test::relative_error(initial.data(), ref.data(), ref.size()), 1e-4);  // the steps did move it
  }
}

TEST(Optimizer, ClipFactor) {
  EXPECT_DOUBLE_EQ(grad_clip_factor(0.5, 1.0), 1.0);
  EXPECT_NEAR(grad_clip_factor(4.0, 1.0), 1.0 / (4.0 + 1e-6), 1e-15);
  EXPECT_DOUBLE_EQ(grad_clip_factor(4.0, 0.0), 1.0);  // clipping off
}

TEST(Optimizer, SchedulesMatchTransformers) {
  json f = test::json_fixture("train/optimizer.json", 1)["schedules"];
  ASSERT_EQ(f.size(), 9u);
  for (const json& s : f) {
    LrSchedule schedule = lr_schedule_from_name(s["schedule"]);
    const int64_t total = s["total"];
    const int64_t warmup = lr_warmup_steps(s["warmup_ratio"], total);
    for (int64_t step = 0; step < total; step++) {
      const double ref = s["lrs"][step];
      EXPECT_NEAR(lr_at(schedule, s["peak"], step, warmup, total), ref, 1e-12 * 2e-5)
          << s["schedule"] << " total " << total << " step " << step;
    }
  }
  EXPECT_THROW(lr_schedule_from_name("step"), Error);
}

}  // namespace
}  // namespace stapo
