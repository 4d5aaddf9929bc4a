// Loss flags (train/loss_flags.h).
#include "train/loss_flags.h"

namespace stapo {

void loss_flags_add(CLI::App& app, LossFlags& f) {
  app.add_option("--loss", f.loss, "stapo (= stapo-sigmoid), stapo-hinge, dpo, simpo, hinge, ipo, cpo, orpo, sft")
      ->check(CLI::IsMember({"stapo", "stapo-sigmoid", "stapo-hinge", "dpo", "simpo", "hinge", "ipo", "cpo", "orpo",
                             "sft"}));
  app.add_option("--reward", f.reward, "avg, sum, sum-ref, avg-ref (default: the loss's, docs/stapo-loss.md)")
      ->check(CLI::IsMember({"avg", "sum", "sum-ref", "avg-ref"}));
  app.add_option("--beta", f.values.beta, "z = beta·Δ (default per loss)");
  app.add_option("--gamma", f.values.gamma, "simpo target margin (1.0)");
  app.add_option("--gamma-left", f.values.gamma_left, "stapo left margin γL (1.0)");
  app.add_option("--gamma-right", f.values.gamma_right, "stapo right margin γR > γL (5.0)");
  app.add_option("--lambda-right", f.values.lambda_right, "stapo weight of the right-margin term (1.0)");
  app.add_option("--label-smoothing", f.values.label_smoothing, "dpo/simpo/cpo label smoothing ε (0)");
  app.add_option("--orpo-lambda", f.values.orpo_lambda, "orpo weight of the odds-ratio term (0.1)");
  app.add_option("--alpha", f.values.alpha, "weight of the NLL term on chosen responses (cpo/orpo/sft 1, else 0)");
}

LossConfig loss_flags_config(const CLI::App& app, const LossFlags& f) {
  LossConfig c = loss_defaults(loss_from_name(f.loss));
  if (!f.reward.empty()) c.reward = reward_from_name(f.reward);
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  if (given("--beta")) c.beta = f.values.beta;
  if (given("--gamma")) c.gamma = f.values.gamma;
  if (given("--gamma-left")) c.gamma_left = f.values.gamma_left;
  if (given("--gamma-right")) c.gamma_right = f.values.gamma_right;
  if (given("--lambda-right")) c.lambda_right = f.values.lambda_right;
  if (given("--label-smoothing")) c.label_smoothing = f.values.label_smoothing;
  if (given("--orpo-lambda")) c.orpo_lambda = f.values.orpo_lambda;
  if (given("--alpha")) c.alpha = f.values.alpha;
  return c;
}

}  // namespace stapo
