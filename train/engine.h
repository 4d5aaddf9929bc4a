// What the trainer needs from a model, whatever runs it: the fp32/fp64 CPU reference (train/cpu_engine.h) or
// the bf16 CUDA engine (train/cuda_engine.h). The trainer (train/trainer.h) owns the loop, the schedule, the
// metrics and checkpoints; an engine owns parameters, gradients, optimizer state, and computes each pair's
// loss itself with the one loss header (model/ops/preference_loss.h), where its log-probs are.
//
// One optimizer step:
//   zero_grad()
//   run_pairs(batch, loss, scale, /*backward=*/true)   for each micro-batch of the step: forward, per-sequence
//        sums over RESPONSE tokens (positions with PairBatch::response_sequence ≥ 0) and, when the loss reads
//        them (loss_uses_prompt: TRL's ORPO NLL), over the chosen PROMPT tokens (prompt_sequence ≥ 0, even),
//        the loss of every pair, and backward of Σ_i ℓ_i / scale.pairs;
//        gradients accumulate (+=) across calls, in at least fp32
//   optimizer_step(update)   global gradient norm, clipping and one AdamW update, all where the gradients are;
//        when the norm or any loss of the step is not finite the weights and moments are left untouched
//   take_results()           the pairs of every run_pairs since the last take, and the last update's outcome:
//        the host's one read of the step (the CUDA engine copies them once and waits here, nowhere else in a
//        step: not between forward and backward, not for the norm)
// Evaluation and scoring call run_pairs(..., backward = false) and take_results().
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/batch.h"                // defines: PairBatch
#include "model/model.h"                // defines: CpuModel
#include "model/ops/preference_loss.h"  // defines: LossConfig, PairLogps, PairLoss
#include "train/adamw.h"                // defines: AdamWConfig

namespace stapo {

// How a pair's gradient is normalised within its optimizer step (train/trainer.h): the step's loss is
// (1/P)·Σ_i ℓ_i with ℓ_i's NLL weight P/N, P pairs and N tokens of the NLL term (chosen responses, plus their
// predicted prompt tokens for an NLL over prompt + response) counted over every micro-batch of the step, so
// that k micro-batches of B pairs give exactly the gradient of one batch of k·B pairs.
struct StepScale {
  double pairs = 1;       // P
  double nll_tokens = 1;  // N
  // This run_pairs is the step's last backward (on this rank): a data-parallel engine may then reduce the
  // gradients over the ranks as the backward completes them (train/cuda_zero.h). False: unknown, reduced later.
  bool last = false;
  double nll_weight() const { return pairs / nll_tokens; }
};

// One pair as the engine computed it.
struct PairResult {
  int64_t pair_id = 0;                        // index in its shard
  PairLogps<double> logps{};                  // S, |y|, Sref of chosen and rejected; P_w, |x| − 1 when read
  double entropy_chosen = 0, entropy_rejected = 0;  // Σ_t H_t over each response
  PairLoss<double> loss{};                    // with the step's NLL weight
};

struct OptimizerUpdate {
  double lr = 0;
  double max_grad_norm = 0;  // > 0: gradients scaled by min(1, max_grad_norm / norm) first
  AdamWConfig adamw;
  int64_t t = 1;  // 1-based AdamW update count if this update runs
};

struct StepResults {
  std::vector<PairResult> pairs;  // every pair since the last take_results, in run order
  double grad_norm = 0;           // of the last optimizer_step, before clipping (0 when there was none)
  bool updated = false;           // whether that optimizer_step changed the weights (false: not finite, or none)
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual void run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) = 0;
  virtual void zero_grad() = 0;
  // Weight decay applies to every parameter except RMSNorm weights.
  virtual void optimizer_step(const OptimizerUpdate& update) = 0;
  virtual StepResults take_results() = 0;

  // The model as an HF directory (config.json + safetensors, full precision so a resume is exact).
  // Data parallel (train/collective.h): optimizer_step reduces the gradients over the ranks first; save_model
  // and save_optimizer are collective (every rank calls them, rank 0 writes), and the files are those of one
  // process whatever the world size; load_optimizer reads this rank's part; weights_to_cpu runs on rank 0 alone.
  virtual void save_model(const std::string& dir) = 0;
  virtual void save_optimizer(const std::string& path) = 0;  // the moments
  virtual void load_optimizer(const std::string& path) = 0;
  virtual std::string description() const = 0;  // for logs: kind, parameter count
  // The current weights as an fp32 CPU model, as save_model would write them (rounded to fp32): the trainer's
  // eval samples decode with it (train/eval_samples.h).
  virtual std::unique_ptr<CpuModel<float>> weights_to_cpu() = 0;

  // What the engine measured, called after each step's take_results: `metrics` join that step's log line,
  // `progress` its progress line. Never waits: the CUDA engine reports the steps its device had finished by then
  // (usually the one before). Default: nothing (the trainer logs tokens_per_s for every engine).
  struct StepReport {
    nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
    std::string progress;
  };
  virtual StepReport step_report() { return {}; }
};

// Appends one PairResult per pair i < num_pairs: pair_ids[i], and from the per-sequence arrays (2i chosen,
// 2i+1 rejected) S, Σ H_t and |y|, the reference sums (2·num_pairs, or null: 0), losses[i], and, when given,
// the chosen prompt's P and |x| − 1 (per-sequence arrays too). F = double (the CPU engine's sums) or float (the
// CUDA engine's, copied from the device).
template <typename F>
void append_pair_results(std::vector<PairResult>& out, int num_pairs, const int64_t* pair_ids,
                         const float* reference_logps, const F* seq_logp, const F* seq_entropy, const F* seq_tokens,
                         const PairLoss<F>* losses, const F* seq_prompt_logp = nullptr,
                         const F* seq_prompt_tokens = nullptr);

}  // namespace stapo
