// What the trainer needs from a model, whatever runs it: the CPU reference (train/cpu_engine.h, fp32 or
// double) now, the bf16 CUDA engine later. The trainer (train/trainer.h) owns the loop, the losses, the
// metrics, the schedule and checkpoints; an engine owns parameters, gradients and optimizer state.
//
// Per pair batch the engine reduces its per-token outputs to per-sequence sums over RESPONSE tokens
// (positions with PairBatch::response_sequence ≥ 0): S(y) = Σ log π(y_t|·) and Σ H_t (entropy). The
// backward pass receives dℓ/dS per sequence and applies it to every response token of that sequence
// (∂S/∂logp_t = 1), accumulating parameter gradients across calls until zero_grad().
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/batch.h"   // defines: PairBatch
#include "model/model.h"   // defines: CpuModel
#include "train/adamw.h"   // defines: AdamWConfig

namespace stapo {

class Engine {
 public:
  virtual ~Engine() = default;

  // logp_sum, entropy_sum: (2B) per sequence of the batch. Keeps what backward needs.
  virtual void forward(const PairBatch& batch, std::vector<double>& logp_sum, std::vector<double>& entropy_sum) = 0;
  // dlogp_sum (2B): dL/dS of each sequence of the last forward's batch. Gradients accumulate (+=).
  virtual void backward(const std::vector<double>& dlogp_sum) = 0;
  virtual void zero_grad() = 0;
  virtual double grad_sum_squares() = 0;  // Σ grad² over all parameters, in a fixed order
  // One AdamW update (t = 1-based update count); grad_scale multiplies every gradient (clipping).
  // Weight decay applies to every parameter except RMSNorm weights.
  virtual void optimizer_step(double lr, double grad_scale, const AdamWConfig& config, int64_t t) = 0;

  // The model as an HF directory (config.json + safetensors, full precision so a resume is exact).
  virtual void save_model(const std::string& dir) = 0;
  virtual void save_optimizer(const std::string& path) = 0;  // the moments
  virtual void load_optimizer(const std::string& path) = 0;
  virtual std::string description() const = 0;  // for logs: kind, parameter count
  // The current weights as an fp32 CPU model, as save_model would write them (rounded to fp32): the trainer's
  // eval samples decode with it (train/eval_samples.h).
  virtual std::unique_ptr<CpuModel<float>> weights_to_cpu() = 0;

  // What the engine measured of the step whose optimizer_step just returned: `metrics` join that step's log
  // line, `progress` its progress line. Default: nothing (the trainer logs tokens_per_s for every engine).
  struct StepReport {
    nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
    std::string progress;
  };
  virtual StepReport step_report() { return {}; }
};

}  // namespace stapo
