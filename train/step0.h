// Step-0 diagnostics (docs/stapo-loss.md, "the reversal hazard"): where the training pairs sit relative to
// StaPO's margins with the initial weights, before any update. A two-sided loss pushes Δ *down* for a pair that
// starts above the right margin, by lowering the chosen answer and raising the rejected one; on data whose
// rejected answers the model already finds far less likely (off-policy, malformed) that teaches it to produce
// them. The trainer logs these numbers as step 0 and warns when more than kStep0WarnFraction of the pairs start
// above the right margin of a StaPO loss.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/pair_loader.h"           // defines: PairLoaderConfig
#include "data/shard.h"                 // defines: Shard
#include "model/ops/preference_loss.h"  // defines: LossConfig
#include "train/engine.h"               // defines: Engine, PairResult

namespace stapo {

inline constexpr double kStep0WarnFraction = 0.10;

// Every pair of the shard from its reference log-probs, which must be the initial weights' (the reference
// pass of this run): S = Sref, so no forward pass is needed.
std::vector<PairResult> step0_pairs_from_reference(const Shard& shard, const LossConfig& config);
// The first pairs of epoch 0 in the training order (`loader_config`'s seed), at least min_pairs of them or the
// whole epoch when it is shorter, through the engine's forward pass (no backward).
std::vector<PairResult> step0_pairs_from_engine(Engine& engine, const Shard& shard,
                                                const PairLoaderConfig& loader_config, const LossConfig& config,
                                                int64_t min_pairs);

// The log line: {"step": 0, "step0/source", "step0/pairs", "step0/delta/p05".."step0/z/p95",
// "step0/frac_above_right" (Δ > m_r), "step0/frac_below_left" (Δ < m_l)}.
nlohmann::ordered_json step0_json(const std::vector<PairResult>& pairs, const LossConfig& config,
                                  const std::string& source);
// The printed table, and the warning when it applies (empty otherwise).
std::string step0_table(const nlohmann::ordered_json& step0, const LossConfig& config);
std::string step0_warning(const nlohmann::ordered_json& step0, const LossConfig& config);

}  // namespace stapo
