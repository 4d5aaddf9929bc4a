// Host side of train/losses.h: loss and reward names, the spec's per-loss defaults, validation.
#include "train/losses.h"

#include <cmath>

#include "common/error.h"

namespace stapo {

namespace {
struct LossEntry {
  const char* name;
  LossKind kind;
};
const LossEntry kLosses[] = {{"stapo-sigmoid", LossKind::stapo_sigmoid}, {"stapo-hinge", LossKind::stapo_hinge},
                             {"dpo", LossKind::dpo},   {"simpo", LossKind::simpo},
                             {"hinge", LossKind::hinge}, {"ipo", LossKind::ipo},
                             {"cpo", LossKind::cpo},   {"orpo", LossKind::orpo},
                             {"sft", LossKind::sft}};
const char* const kRewardNames[] = {"avg", "sum", "sum-ref", "avg-ref"};
}  // namespace

LossKind loss_from_name(const std::string& name) {
  if (name == "stapo") return LossKind::stapo_sigmoid;
  for (const LossEntry& e : kLosses)
    if (name == e.name) return e.kind;
  fail("unknown loss '", name, "': use stapo, stapo-sigmoid, stapo-hinge, dpo, simpo, hinge, ipo, cpo, orpo or sft");
}

const char* loss_name(LossKind loss) {
  for (const LossEntry& e : kLosses)
    if (loss == e.kind) return e.name;
  fail("invalid LossKind ", static_cast<int>(loss));
}

RewardKind reward_from_name(const std::string& name) {
  for (int i = 0; i < 4; i++)
    if (name == kRewardNames[i]) return static_cast<RewardKind>(i);
  fail("unknown reward '", name, "': use avg, sum, sum-ref or avg-ref");
}

const char* reward_name(RewardKind reward) { return kRewardNames[static_cast<int>(reward)]; }

LossConfig loss_defaults(LossKind loss) {
  LossConfig c;  // the stapo defaults
  c.loss = loss;
  switch (loss) {
    case LossKind::stapo_sigmoid:
    case LossKind::stapo_hinge:
      break;
    case LossKind::dpo:
    case LossKind::hinge:
      c.reward = RewardKind::sum_ref;
      c.beta = 0.1;
      break;
    case LossKind::simpo:
      c.reward = RewardKind::avg;
      c.beta = 2.0;
      c.gamma = 1.0;
      break;
    case LossKind::ipo:
      c.reward = RewardKind::avg_ref;
      c.beta = 0.1;
      break;
    case LossKind::cpo:
      c.reward = RewardKind::sum;
      c.beta = 0.1;
      c.alpha = 1.0;
      break;
    case LossKind::orpo:  // TRL's ORPO reports rewards as β·A with β = λ
      c.reward = RewardKind::avg;
      c.beta = 0.1;
      c.orpo_lambda = 0.1;
      c.alpha = 1.0;
      break;
    case LossKind::sft:
      c.reward = RewardKind::avg;
      c.beta = 1.0;
      c.alpha = 1.0;
      break;
  }
  return c;
}

void loss_config_validate(const LossConfig& c, bool have_reference) {
  STAPO_CHECK(std::isfinite(c.beta) && c.beta > 0, "--beta must be > 0 (got ", c.beta, "): it scales z = beta·Δ");
  const bool stapo = c.loss == LossKind::stapo_sigmoid || c.loss == LossKind::stapo_hinge;
  if (stapo) {
    STAPO_CHECK(c.gamma_right > c.gamma_left, "--gamma-right (", c.gamma_right, ") must be greater than --gamma-left (",
                c.gamma_left, "): StaPO pulls z into the band [gamma_left, gamma_right]");
    STAPO_CHECK(c.lambda_right >= 0, "--lambda-right must be >= 0 (got ", c.lambda_right, ")");
  }
  STAPO_CHECK(c.label_smoothing >= 0 && c.label_smoothing < 0.5, "--label-smoothing must be in [0, 0.5) (got ",
              c.label_smoothing, ")");
  STAPO_CHECK(c.alpha >= 0, "--alpha (NLL weight) must be >= 0 (got ", c.alpha, ")");
  STAPO_CHECK(c.orpo_lambda >= 0, "--orpo-lambda must be >= 0 (got ", c.orpo_lambda, ")");
  STAPO_CHECK(c.loss != LossKind::sft || c.alpha > 0, "--loss sft trains only the NLL term: --alpha must be > 0");
  STAPO_CHECK(!reward_uses_reference(c.reward) || have_reference, "--reward ", reward_name(c.reward), " (loss ",
              loss_name(c.loss),
              ") needs reference log-probs and the data has none: run with --ref precompute, or choose "
              "--reward avg or sum");
}

}  // namespace stapo
