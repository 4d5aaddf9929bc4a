// The CPU engine: CpuModel<T> (model/model.h) with AdamW moments, behind the trainer's Engine interface.
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

  void forward(const PairBatch& batch, std::vector<double>& logp_sum, std::vector<double>& entropy_sum) override;
  void backward(const std::vector<double>& dlogp_sum) override;
  void zero_grad() override { model_->zero_grad(); }
  double grad_sum_squares() override;
  void optimizer_step(double lr, double grad_scale, const AdamWConfig& config, int64_t t) override;
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
  std::vector<T> logp_, entropy_;   // (rows·T) per position of the last forward
  std::vector<T> dlogp_;
  std::vector<int32_t> response_sequence_;
};

}  // namespace stapo
