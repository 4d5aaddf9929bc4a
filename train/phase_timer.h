// The phases of a training step that dev/bench/gpu_step times with CUDA events (train/cuda_phase_timer.h) and
// dev/bench/torch_baseline.py takes from torch.profiler under the same names (its PHASES; test_phase_timer
// checks that the two lists agree). Each layer's phases add up over the layers: "attention_forward" is the
// attention core of every layer, "matmul_backward" every projection's input and weight gradients, and so on.
// This part is host code without CUDA: the names, the sums and the table.
#pragma once
#include <array>
#include <string>
#include <vector>

namespace stapo {

enum class Phase {
  embedding,             // token embedding forward and its gradient
  norm_forward,          // RMSNorms (with the residual adds they fuse)
  matmul_forward,        // q, k, v, o, gate, up, down projections
  elementwise_forward,   // RoPE, SwiGLU
  attention_forward,     // the attention core
  lm_head_loss,          // response rows, lm_head + log-probs, sequence sums, loss and dlogp, lm_head backward
  recompute,             // layer_restore: what recompute levels 1 and 2 run again before a layer's backward
  norm_backward,
  matmul_backward,
  elementwise_backward,
  attention_backward,    // including the δ = Σ dout·out pass
  grad_clip,             // gradient norm and clip decision
  optimizer,             // AdamW
  other,                 // zero_grad, memsets, uploads
  count
};
constexpr int PHASE_COUNT = (int)Phase::count;

const char* phase_name(Phase phase);

// Milliseconds per phase summed over `steps` recorded steps, and the recorded steps' own total.
struct PhaseTotals {
  std::array<double, PHASE_COUNT> ms{};
  double step_ms = 0;
  int steps = 0;
};

// One recorded step: interval i (between mark i and mark i+1, or the step's end) lasted elapsed_ms[i] and
// belongs to phases[i]. The sizes must agree (stapo::Error otherwise).
void add_step(PhaseTotals& totals, const std::vector<Phase>& phases, const std::vector<float>& elapsed_ms);

// A markdown table: phase, ms per step, % of the step; the phases in enum order, then the total.
std::string phase_table(const PhaseTotals& totals);

}  // namespace stapo
