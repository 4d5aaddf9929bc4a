// The CPU engine: CpuModel<T> (model/model.h) with AdamW moments, behind the trainer's Engine interface; the
// per-pair loss through model/ops/preference_loss.h's CPU twins of the fused reduction's last steps, in double.
// T = float for train_stapo_cpu, double for the whole-pipeline finite-difference checks.
//
// Data parallel (train/collective.h, docs/distributed.md): with a collective of W > 1 ranks every rank holds the
// whole model and runs its share of the step's pairs; optimizer_step reduces the gradients over ranks first.
// ZeRO-1 (zero1, the default): the gradients are reduce-scattered, each rank clips and updates its shard_range of
// the weights with AdamW moments for that range only, then the weights are all-gathered. Without it: all-reduced
// gradients and every rank updates everything (moments for the whole model on each). The gradient norm is the
// whole model's either way, each rank summing the squares of its shard_range, then one sum over ranks.
//
// Moments: T (adamw_update, double arithmetic), or with MomentKind::q8 (float only) 8-bit block-wise ones
// (model/ops/adamw.h) but fp32 ones for the input embedding (train/adamw.h's keeps_fp32_moments), updated by
// adamw_compact_update, the CPU twin of the CUDA kernel, with the model's fp32 weights as the master: the CPU
// trainer runs the GPU's 8-bit optimizer.
#pragma once
#include <cstdint>
#include <memory>

#include "model/model.h"        // defines: CpuModel
#include "model/ops/adamw.h"    // defines: MomentKind
#include "train/adamw.h"        // defines: Q8MomentLayout
#include "train/collective.h"   // defines: Collective, ShardRange
#include "train/engine.h"       // defines: Engine
#include "train/optimizer_state.h"  // defines: Q8MomentState

namespace stapo {

template <typename T>
class CpuEngine : public Engine {
 public:
  // data_parallel: null or W = 1 for one process; kept by reference. moments: MomentKind::q8 for float only, and
  // not with ZeRO-1 over W > 1 ranks (its shard ranges cut through the 8-bit blocks).
  explicit CpuEngine(std::unique_ptr<CpuModel<T>> model, Collective* data_parallel = nullptr, bool zero1 = true,
                     MomentKind moments = MomentKind::fp32);

  void run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) override;
  void zero_grad() override;
  void optimizer_step(const OptimizerUpdate& update) override;
  StepResults take_results() override;
  // Under data parallel these two are collective (every rank calls them) and rank 0 writes; load_optimizer reads
  // this rank's range of the file, which is the same whatever the world size that wrote it.
  void save_model(const std::string& dir) override;
  void save_optimizer(const std::string& path) override;
  void load_optimizer(const std::string& path) override;
  std::string description() const override;
  std::unique_ptr<CpuModel<float>> weights_to_cpu() override;

  CpuModel<T>& model() { return *model_; }

 private:
  std::unique_ptr<CpuModel<T>> model_;
  Collective* ranks_;    // null: one process
  ShardRange updates_;   // the parameters this rank updates: its shard_range under ZeRO-1, else all of them
  ShardRange norm_part_; // the gradients whose squares this rank adds to the global norm: its shard_range
  bool sharded_ = false; // ZeRO-1 with W > 1
  // AdamW moments of updates_, laid out as that range of the model's parameter buffer; allocated (zero) by the
  // first optimizer call, so an engine that only scores (./score, the reference pass) does not hold 2 × the
  // weights for nothing.
  void ensure_moments();
  MomentKind moments_;
  std::vector<T> m_, v_;     // MomentKind::fp32
  Q8MomentLayout q8_layout_; // MomentKind::q8 (never sharded): each tensor's place in q8_, packed
  Q8MomentState q8_;         // the embedding's fp32 m, v, the other tensors' codes and absmax
  std::vector<T> logp_, entropy_, dlogp_;  // (rows·T) per position of the last batch
  StepResults results_;
  bool step_has_nonfinite_loss_ = false;  // since zero_grad
};

}  // namespace stapo
