// Step-0 diagnostics (train/step0.h).
#include "train/step0.h"

#include <algorithm>

#include "common/error.h"
#include "train/trainer.h"  // defines: quantiles_json, run_micro_batches

namespace stapo {

namespace {

bool is_stapo(const LossConfig& config) {
  return config.loss == LossKind::stapo_sigmoid || config.loss == LossKind::stapo_hinge;
}

}  // namespace

std::vector<PairResult> step0_pairs_from_reference(const Shard& shard, const LossConfig& config) {
  STAPO_CHECK(shard.has_reference(), shard.path(), ": no reference log-probs for the step-0 diagnostics");
  const float* ref = shard.reference_logps();
  std::vector<PairResult> pairs(size_t(shard.num_pairs()));
  for (int64_t i = 0; i < shard.num_pairs(); i++) {
    const PairView v = shard.pair(i);
    PairResult& r = pairs[size_t(i)];
    r.pair_id = i;
    r.logps = {ref[2 * i], ref[2 * i + 1], double(v.chosen_length), double(v.rejected_length), ref[2 * i],
               ref[2 * i + 1]};
    r.loss = loss_pair(config, r.logps, 0.0);
  }
  return pairs;
}

std::vector<PairResult> step0_pairs_from_engine(Engine& engine, const Shard& shard,
                                                const PairLoaderConfig& loader_config, const LossConfig& config,
                                                int64_t min_pairs) {
  PairLoader loader(shard, loader_config);
  const int64_t steps = std::min(loader.steps_per_epoch(), (min_pairs + loader_config.pairs_per_batch - 1) /
                                                               std::max(1, loader_config.pairs_per_batch));
  std::vector<PairBatch> one(1);
  for (int64_t s = 0; s < steps; s++) {
    loader.next(one[0]);
    run_micro_batches(engine, one, config, false);
  }
  return engine.take_results().pairs;
}

nlohmann::ordered_json step0_json(const std::vector<PairResult>& pairs, const LossConfig& config,
                                  const std::string& source) {
  STAPO_CHECK(!pairs.empty(), "step-0 diagnostics: no pairs");
  double above = 0, below = 0;
  for (const PairResult& r : pairs) {
    above += r.loss.delta > config.margin_right;
    below += r.loss.delta < config.margin_left;
  }
  nlohmann::ordered_json j;
  j["step"] = 0;
  j["step0/source"] = source;
  j["step0/pairs"] = pairs.size();
  j.update(quantiles_json(pairs, "step0/"));
  j["step0/frac_above_right"] = above / double(pairs.size());
  j["step0/frac_below_left"] = below / double(pairs.size());
  return j;
}

std::string step0_table(const nlohmann::ordered_json& j, const LossConfig& config) {
  std::string out = cat("step 0 (initial weights; ", j["step0/pairs"].get<int64_t>(), " training pairs, ",
                        j["step0/source"].get<std::string>(), "; reward ", reward_name(config.reward), ", beta ",
                        config.beta, "):\n");
  out += "  quantile        5%       25%       50%       75%       95%\n";
  for (const char* name : {"delta", "z"}) {
    char line[160];
    snprintf(line, sizeof(line), "  %-8s %9.3f %9.3f %9.3f %9.3f %9.3f\n", name[0] == 'z' ? "z" : "Δ",
             j[cat("step0/", name, "/p05")].get<double>(), j[cat("step0/", name, "/p25")].get<double>(),
             j[cat("step0/", name, "/p50")].get<double>(), j[cat("step0/", name, "/p75")].get<double>(),
             j[cat("step0/", name, "/p95")].get<double>());
    out += line;
  }
  char line[256];
  snprintf(line, sizeof(line), "  above the right margin (Δ > m_r = %g): %.1f%%; below the left margin (Δ < m_l = %g): %.1f%%%s\n",
           config.margin_right, 100 * j["step0/frac_above_right"].get<double>(), config.margin_left,
           100 * j["step0/frac_below_left"].get<double>(),
           is_stapo(config) ? "" : " (StaPO's margins, for comparison: this loss has none)");
  return out + line;
}

std::string step0_warning(const nlohmann::ordered_json& j, const LossConfig& config) {
  const double above = j["step0/frac_above_right"].get<double>();
  if (!is_stapo(config) || config.right_margin == RightMargin::saturate || above <= kStep0WarnFraction) return "";
  char pct[32];
  snprintf(pct, sizeof(pct), "%.1f%%", 100 * above);
  return cat("warning: ", pct, " of the training pairs start above StaPO's right margin (Δ > m_r = ", config.margin_right,
             " with the initial weights; more than ", 100 * kStep0WarnFraction,
             "% is a sign of off-policy or malformed pairs). For those pairs the right-margin term pushes Δ down "
             "by lowering the chosen answer and raising the rejected one: the model learns to produce the rejected "
             "answers (the reversal hazard, docs/stapo-loss.md). Prefer on-policy pairs (replies sampled from this "
             "model, then ranked: docs/stability.md), or a reading that avoids the reversal: --right-margin saturate, or "
             "--reward avg-ref / sum-ref with --ref precompute.\n");
}

}  // namespace stapo
