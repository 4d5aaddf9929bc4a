// The command line both trainers share (train_stapo_cpu, train_stapo): the flags, the data, the optional
// reference pass, resume, the Trainer loop and the closing summary. Only the engine differs: the caller adds
// its own flags and says how a model directory becomes an engine.
// train_stapo_cpu and train_stapo are this plus their engine factory and their own few flags.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "data/pair_loader.h"  // defines: PairLoaderConfig
#include "train/collective.h"  // defines: Collective
#include "train/engine.h"      // defines: Engine
#include "train/loss_flags.h"  // defines: LossFlags
#include "train/trainer.h"     // defines: TrainerConfig

namespace stapo {

struct TrainFlags {
  std::string model_dir, data_path, eval_path, out_dir, resume_dir, ref = "none", schedule = "linear";
  std::string sample_prompts, sample_template;  // train/eval_samples.h; template "": the training shard's
  int sample_tokens = 32;
  bool overwrite = false;             // --overwrite: a fresh run may delete an earlier run in --out
  bool allow_changed_config = false;  // --allow-changed-config: resume with other settings (train/run_dir.h)
  int zero = 1;                       // --zero: ZeRO stage under data parallel (1: optimizer sharded, 0: not)
  LossFlags loss;
  TrainerConfig trainer;
  PairLoaderConfig loader;
};

// Adds the trainer's flags (--model, --data and --out required).
void train_flags_add(CLI::App& app, TrainFlags& flags);

using EngineFactory = std::function<std::unique_ptr<Engine>(const std::string& model_dir)>;

// Trains as the flags say. make_engine loads a checkpoint directory (called for the reference pass, then for
// the model to train); `trained` runs on the training engine after the last step (e.g. a device summary).
// data_parallel (null: one process): the ranks of the job, which make_engine's engines reduce over too. Rank 0
// alone opens --out, runs the reference pass (the others wait) and prints; an error on any rank ends every rank
// (Collective::abort) instead of leaving them waiting for it.
void train_run(const CLI::App& app, TrainFlags& flags, const EngineFactory& make_engine,
               const std::function<void(Engine&)>& trained = nullptr, Collective* data_parallel = nullptr);

}  // namespace stapo
