// The CPU engine: CpuModel<T> (model/model.h) with AdamW moments, behind the trainer's Engine interface; the
// per-pair loss through model/ops/preference_loss.h's CPU twins of the fused reduction's last steps, in double.
// T = float for train_stapo_cpu, double for the whole-pipeline finite-difference checks.
#pragma once
#include <memory>

#include "model/model.h"   // defines: CpuModel
#include "train/engine.h"  // defines: Engine

namespace stapo {

template <typename T>
class CpuEngine : public Engine {
 public:
  explicit CpuEngine(std::unique_ptr<CpuModel<T>> model);

  void run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) override;
  void zero_grad() override;
  void optimizer_step(const OptimizerUpdate& update) override;
  StepResults take_results() override;
  void save_model(const std::string& dir) override;
  void save_optimizer(const std::string& path) override;
  void load_optimizer(const std::string& path) override;
  std::string description() const override;
  std::unique_ptr<CpuModel<float>> weights_to_cpu() override;

  CpuModel<T>& model() { return *model_; }

 private:
  std::unique_ptr<CpuModel<T>> model_;
  // AdamW moments, laid out as the model's parameter buffer; allocated (zero) by the first optimizer call, so
  // an engine that only scores (./score, the reference pass) does not hold 2 × the weights for nothing.
  void ensure_moments();
  std::vector<T> m_, v_;
  std::vector<T> logp_, entropy_, dlogp_;  // (rows·T) per position of the last batch
  StepResults results_;
  bool step_has_nonfinite_loss_ = false;  // since zero_grad
};

}  // namespace stapo
