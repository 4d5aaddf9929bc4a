// The loss flags shared by train_stapo_cpu, train_stapo and score: --loss picks the spec's defaults
// (model/ops/preference_loss.cpp loss_defaults), and each flag given on the command line overrides one field.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "model/ops/preference_loss.h"  // defines: LossConfig

namespace stapo {

struct LossFlags {
  std::string loss = "stapo";
  std::string reward;  // empty: the loss's default
  std::string right_margin = "absolute";
  std::string nll_span = "response";
  LossConfig values;   // parsed values; only the flags given are used
};

void loss_flags_add(CLI::App& app, LossFlags& flags);
// After parsing: the defaults of --loss with every given flag applied (not validated yet).
LossConfig loss_flags_config(const CLI::App& app, const LossFlags& flags);

}  // namespace stapo
