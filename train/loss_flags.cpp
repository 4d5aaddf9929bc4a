// Loss flags (train/loss_flags.h).
#include "train/loss_flags.h"

#include "common/error.h"

namespace stapo {

void loss_flags_add(CLI::App& app, LossFlags& f) {
  app.add_option("--loss", f.loss,
                 "stapo (= stapo-sigmoid), stapo-hinge; TRL's dpo, cdpo, robust, exo_pair, hinge, ipo, nca_pair, "
                 "bco_pair, sppo_hard, apo_zero, apo_down, simpo, cpo, orpo, sft (docs/stapo-loss.md)")
      ->check(CLI::IsMember(loss_names()));
  app.add_option("--reward", f.reward, "avg, sum, sum-ref, avg-ref (default: the loss's, docs/stapo-loss.md)")
      ->check(CLI::IsMember({"avg", "sum", "sum-ref", "avg-ref"}));
  app.add_option("--beta", f.values.beta, "z = beta·Δ (default per loss; orpo: its λ, as TRL's ORPOConfig.beta)");
  app.add_option("--gamma", f.values.gamma, "simpo target margin (1.0)");
  app.add_option("--margin-left", f.values.margin_left, "stapo left margin m_l, in units of Δ (0.5)");
  app.add_option("--margin-right", f.values.margin_right, "stapo right margin m_r > m_l, in units of Δ (0.7)");
  app.add_option("--lambda-right", f.values.lambda_right, "stapo weight of the right-margin term (1.0)");
  app.add_option("--right-margin", f.right_margin,
                 "stapo above m_r: absolute (push Δ back down, the paper's) or saturate (flat: no gradient)")
      ->check(CLI::IsMember({"absolute", "saturate"}));
  app.add_option("--label-smoothing", f.values.label_smoothing,
                 "ε of cdpo and robust (0.1), exo_pair (1e-3), simpo and cpo (0)");
  app.add_option("--alpha", f.values.alpha,
                 "weight of the NLL term on the chosen sequence (cpo/orpo/sft 1, else 0; on dpo: RPO's rpo_alpha)");
  app.add_option("--nll-span", f.nll_span,
                 "tokens of the NLL term: response, or prompt+response (orpo's default, as TRL's ORPO)")
      ->check(CLI::IsMember({"response", "prompt+response"}));
  // A combination the spec rejects (m_r <= m_l, beta <= 0, ...) is a bad flag: exit 2 naming it, as CLI11's own
  // checks. Whether the data has the reference a reward needs is checked later, once the shard is open.
  app.parse_complete_callback([&app, &f] {
    try {
      loss_config_validate(loss_flags_config(app, f), /*have_reference=*/true);
    } catch (const Error& e) {
      throw CLI::ValidationError(e.what());
    }
  });
}

LossConfig loss_flags_config(const CLI::App& app, const LossFlags& f) {
  LossConfig c = loss_defaults(loss_from_name(f.loss));
  if (!f.reward.empty()) c.reward = reward_from_name(f.reward);
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  if (given("--beta")) c.beta = f.values.beta;
  if (given("--gamma")) c.gamma = f.values.gamma;
  if (given("--margin-left")) c.margin_left = f.values.margin_left;
  if (given("--margin-right")) c.margin_right = f.values.margin_right;
  if (given("--right-margin")) c.right_margin = right_margin_from_name(f.right_margin);
  if (given("--lambda-right")) c.lambda_right = f.values.lambda_right;
  if (given("--label-smoothing")) c.label_smoothing = f.values.label_smoothing;
  if (given("--nll-span")) c.nll_span = nll_span_from_name(f.nll_span);
  if (given("--alpha")) c.alpha = f.values.alpha;
  return c;
}

}  // namespace stapo
