// The training loop shared by train_stapo_cpu and the CUDA train_stapo: only the Engine differs.
//
// Before the first step of a run (not on resume): the step-0 diagnostics of train/step0.h, logged as step 0,
// and with periodic evaluation an evaluation of the initial weights.
// One optimizer step = grad_accum micro-batches of the dataloader. All of them are fetched first, so the
// step's pair count P and chosen-token count N_w are known before any backward (StepScale, train/engine.h):
// each pair's gradient is (∂ℓ_i/∂S)/P with the NLL weight P/N_w (model/ops/preference_loss.h), which makes k
// micro-batches of B pairs exactly one batch of k·B pairs, token normalisation of `avg` rewards and NLL terms
// included. The engine computes every pair's loss where its log-probs are, then clips by the global norm and
// updates (Engine::optimizer_step, at the LR of the schedule); the trainer reads the step's per-pair results
// once (Engine::take_results), and writes a JSONL log line and a progress line (with the engine's
// step_report), checkpoints when due, then evaluation and eval samples (train/eval_samples.h): the checkpoint
// first, so that a failing evaluation cannot lose the trained weights (the last step's final/). A non-finite
// loss or gradient norm (the engine then leaves the weights untouched) stops the run naming the step, the pairs
// and the last good checkpoint, or (skip_nonfinite) is counted and the run goes on; a run that skipped more
// than max_skipped_fraction of its steps ends with an error after saving final/.
//
// Data parallel (set_collective, docs/distributed.md): every rank runs this loop on its share of each step's
// pairs (the loader's rank and world size); the step's normalisers are summed over ranks before any backward,
// the step's and each evaluation's metrics after; the engine reduces the gradients. Rank 0 alone writes the log,
// the progress line, the step-0 diagnostics and the eval samples; checkpoints are written by rank 0 from
// collective engine calls, so every rank saves together.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/pair_loader.h"  // defines: PairLoader, PairLoaderConfig, DataPosition
#include "data/shard.h"        // defines: Shard
#include "train/adamw.h"       // defines: AdamWConfig
#include "train/collective.h"  // defines: Collective
#include "train/engine.h"      // defines: Engine
#include "train/eval_samples.h"  // defines: EvalSampler
#include "model/ops/preference_loss.h"      // defines: LossConfig
#include "train/lr_schedule.h"  // defines: LrSchedule

namespace stapo {

// Sums over the pairs of a step (or an evaluation), turned into the spec's metrics by metrics_json.
struct MetricSums {
  int64_t pairs = 0;
  int64_t tokens = 0;  // every non-padding position the model ran
  double chosen_tokens = 0, rejected_tokens = 0;
  double pref_loss = 0;  // Σ_i pref(z_i) (the NLL term is added from nll below)
  double nll = 0;        // Σ_i −S_w,i
  double prompt_nll = 0, prompt_tokens = 0;  // Σ_i −P_w,i and Σ_i (|x_i| − 1), for an NLL over prompt + response
  double reward_chosen = 0, reward_rejected = 0;
  double correct = 0;  // pairs with rewards/chosen > rewards/rejected (TRL's rewards/accuracies)
  double logp_chosen = 0, logp_rejected = 0;
  double z = 0, z_max = -1e300, delta = 0, above_right = 0, below_left = 0;
  double entropy_chosen = 0, entropy_rejected = 0;  // Σ over response tokens

  void add(const MetricSums& o);
  void add(const PairResult& pair, const LossConfig& config);
  void all_reduce(Collective& ranks);  // the sums of every rank (z_max: the maximum), on every rank
  // The loss the gradient is taken of: mean pref(z) over pairs + α · token-mean NLL of the chosen sequences.
  double loss(const LossConfig& config) const;

 private:
  std::vector<double*> sums();  // every field that adds up but the two counts: the one list add and all_reduce use
};

// TRL names (meaning what TRL's trainer for the loss logs) plus z/*, delta/*, entropy/*, nll/chosen, each
// prefixed by `prefix` ("" or "eval/").
nlohmann::ordered_json metrics_json(const MetricSums& sums, const LossConfig& config, const std::string& prefix);
// The 5/25/50/75/95% quantiles of Δ and z over the pairs: "<prefix>delta/p05" ... "<prefix>z/p95".
nlohmann::ordered_json quantiles_json(const std::vector<PairResult>& pairs, const std::string& prefix);

// The step's normalisers (pairs and NLL tokens over all its micro-batches) and its non-padding tokens.
StepScale step_scale(const std::vector<PairBatch>& micro_batches, const LossConfig& config);
int64_t count_tokens(const std::vector<PairBatch>& micro_batches);

// Engine::run_pairs on each micro-batch of one step with the step's scale (backward or not); with `ranks`, the
// scale of the whole step, summed over every rank's micro-batches (each rank calls this once per step). The last
// micro-batch with pairs runs with StepScale::last.
void run_micro_batches(Engine& engine, const std::vector<PairBatch>& micro_batches, const LossConfig& config,
                       bool backward, Collective* ranks = nullptr);
// run_micro_batches, then the step's metrics from Engine::take_results (no optimizer step): evaluation, tests.
MetricSums step_forward_backward(Engine& engine, const std::vector<PairBatch>& micro_batches,
                                 const LossConfig& config, bool backward);

struct TrainerConfig {
  LossConfig loss;
  AdamWConfig adamw;
  double lr = 1e-6;  // peak
  LrSchedule schedule = LrSchedule::linear;
  double warmup_ratio = 0.1;
  double max_grad_norm = 1.0;  // ≤ 0: no clipping
  int grad_accum = 1;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // > 0 overrides epochs
  int64_t eval_every = 0;  // > 0: at step 0 and every N steps; 0: at the end only (when there is eval data)
  int64_t save_every = 0;  // 0: checkpoint at the end only
  bool skip_nonfinite = false;
  double max_skipped_fraction = 0.1;  // a run that skipped more of its steps than this ends with an error
  // Step-0 diagnostics (train/step0.h) before the first update: this many training pairs (0: none), or every
  // pair from the shard's reference log-probs when those are the initial weights' (step0_from_reference).
  int64_t step0_pairs = 512;
  bool step0_from_reference = false;
  std::string out_dir;
  std::string tokenizer_dir;  // tokenizer files copied into every checkpoint from here
  uint64_t seed = 0;
};

struct TrainerState {
  int64_t step = 0;     // optimizer steps done (skipped ones included)
  int64_t updates = 0;  // AdamW updates done (= AdamW's t)
  int64_t skipped_nonfinite = 0;
  DataPosition position;
  std::string last_checkpoint;
  // bco_pair's δ (model/ops/preference_loss.h RunningMean): step n's loss uses the mean over steps 1..n−1 (0 at
  // first), and step n's rewards join it after the step. Saved with the checkpoint, so a resume is exact.
  RunningMean bco_delta;
};

class Trainer {
 public:
  // eval_loader may be null. The trainer keeps references to everything.
  Trainer(Engine& engine, PairLoader& loader, PairLoader* eval_loader, int64_t eval_steps,
          const TrainerConfig& config);

  // Greedy replies to the sampler's prompts at every evaluation point (every eval_every steps and at the end,
  // with or without eval data), logged and printed. Kept by reference; null: none.
  void set_eval_sampler(const EvalSampler* sampler) { sampler_ = sampler; }
  // What the run's results depend on (train/run_dir.h run_settings), saved in every checkpoint.
  void set_settings(const nlohmann::ordered_json& settings) { settings_ = settings; }
  // Data parallel over these ranks (kept by reference); the loaders must be sharded by the same rank and world
  // size, and the engine must reduce its gradients over the same ranks.
  void set_collective(Collective& ranks) { ranks_ = &ranks; }
  const nlohmann::ordered_json& settings() const { return settings_; }
  // Continues from a checkpoint written by this trainer: optimizer moments, step, data position.
  // The engine must already hold the checkpoint's model (loaded from the same directory). Lines of
  // <out>/log.jsonl from steps after the checkpoint are removed (those steps run again), with a count on stderr.
  void resume(const std::string& checkpoint_dir);
  void train();  // until total_steps()
  int64_t total_steps() const;
  const TrainerState& state() const { return state_; }
  nlohmann::ordered_json evaluate();
  nlohmann::ordered_json eval_samples();  // {"step", "samples"}, printed on stderr too
  // Writes <out>/<name> atomically (temp dir + rename): model, tokenizer files, optimizer, trainer state.
  std::string save_checkpoint(const std::string& name);

 private:
  void log(const nlohmann::ordered_json& line);  // rank 0 only
  bool writer() const { return !ranks_ || ranks_->rank() == 0; }
  // After what rank 0 does alone (checkpoint files, eval samples, step-0 diagnostics; every rank calls it): the others
  // wait in the backend's barrier, which under MPI has no time limit, rather than in their next collective, which
  // the NCCL backend gives up on after --collective-timeout (an 8B checkpoint is ~100 GB to write).
  void wait_for_writer();
  void log_eval_samples();  // rank 0 samples and logs; every rank calls it
  void step0_diagnostics();
  void drop_log_after(int64_t step);

  Engine& engine_;
  PairLoader& loader_;
  PairLoader* eval_loader_;
  int64_t eval_steps_;
  const EvalSampler* sampler_ = nullptr;
  Collective* ranks_ = nullptr;
  nlohmann::ordered_json settings_ = nlohmann::ordered_json::object();
  TrainerConfig config_;
  TrainerState state_;
  int64_t steps_per_epoch_;
  int64_t pairs_per_epoch_;
};

}  // namespace stapo
