// The device memory train_stapo needs, item by item, computed before anything is allocated: from the model's
// config, the batch shape and the engine flags alone (no GPU, no weights). `train_stapo --dry-run` prints it; a
// run compares it with the card's free memory and refuses a configuration that cannot fit, naming the cheapest
// flags that would (memory_plan_fit).
//
// One source for the sizes: the parameter tensors (model/params.h's model_param_specs and param_offsets with
// kParamAlign, param_buffer_elements), the gradient buffers (grad_layout) and the activation arena's layout
// (activation_layout) are what the CUDA model allocates from; workspaces whose size the kernels decide (cuBLASLt,
// the lm_head chunks, RMSNorm and grad-norm scratch, cuDNN) come in as MemoryPlanInput::workspaces, filled by the
// engine from the kernels' own functions.
//
// Per parameter (P elements, each tensor padded to a multiple of 128):
//   weights bf16 2·P;  master: fp32 4·P, split 2·P (the low halves), none 0;  gradients: fp32 4·P, bf16 2 B
//   per layer matmul weight + 4 B per embedding, lm_head and RMSNorm weight (grad_layout);
//   moments: fp32 8·P; 8-bit 8 B per input embedding parameter (fp32 m and v: train/adamw.h's keeps_fp32_moments),
//   2 B per other parameter + 8 per block of 2048 of those (absmax of m and v).
// Data parallel over W ranks: one rank's plan; P padded to a multiple of 128·W, and under ZeRO-1 the master and
// moments are P/W per rank (MemoryPlanInput::ranks, zero1).
// Activations for N = 2 · batch-size · max-length tokens (the engine's arena, each buffer 256-byte aligned), by
// --recompute: 0 keeps every activation of every layer; 1 keeps all but the RMSNorm outputs and the SwiGLU
// product, which one shared set of buffers holds; 2 keeps only each layer's input (N·C bf16 per layer) and one
// shared set of every layer buffer, refilled by re-running the layer's forward in backward. Plus the final norm,
// the lm_head's response rows, the batch's index arrays and one layer's backward scratch. The lm_head never
// holds (N, V) logits: its chunks are in the workspace.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"     // defines: ModelConfig
#include "model/ops/adamw.h"  // defines: MasterKind, MomentKind
#include "model/params.h"     // defines: model_param_specs, param_offsets

namespace stapo {

enum class GradKind : int { bf16, fp32 };

// --master fp32|split|none, --moments fp32|8bit, --grads bf16|fp32 (names as the flags spell them).
const char* master_name(MasterKind kind);
const char* moments_name(MomentKind kind);
const char* grads_name(GradKind kind);
// The kinds by those names; another name is an error naming `flag` and the names it takes.
MasterKind master_from_name(const std::string& name, const std::string& flag = "--master");
MomentKind moments_from_name(const std::string& name, const std::string& flag = "--moments");
GradKind grads_from_name(const std::string& name, const std::string& flag = "--grads");

// Every parameter tensor starts at a multiple of kParamAlign elements in the CUDA model's buffers (256 bytes of
// bf16: 128-bit loads and cuBLASLt), so a buffer of P elements per byte of state holds them.
constexpr size_t kParamAlign = 128;

// The elements of the CUDA model's parameter buffer (and of its fp32 gradients): every tensor padded to
// kParamAlign, the whole to a multiple of kParamAlign × shards, so that data parallel's ZeRO-1 shards over that
// many ranks are equal and aligned (train/cuda_zero.h).
size_t param_buffer_elements(const std::vector<ParamSpec>& specs, int shards);

// The activation arena for N tokens: every buffer's byte offset (256-byte aligned) in the engine's order.
enum class ActSlot : int {
  // a layer's (layer ≥ 0), or shared by every layer (layer = −1) where the recompute level refills them
  resid, norm1, q, k, v, att, resid2, norm2, gate, up, act, rstd1, rstd2, lse,
  // once (layer = −1)
  branch, final_resid, final_norm, final_rstd, tokens, positions, segments, response_index, response_targets,
  response_sequence, prompt_sequence, response_h, logp, entropy, response_lse, dlogp,
  d_resid, d_norm, d_att, d_q, d_k, d_v, d_act, d_gate, d_up, attention_scratch,
};
// Where the CUDA model keeps each parameter's gradient. --grads fp32: every gradient fp32, at the parameters' own
// offsets. --grads bf16 ("fp32-partial"): the layers' matmul weights (q, k, v, o, gate, up, down: the
// weight-gradient GEMMs accumulate into bf16, β = 1) in a bf16 buffer; the embedding, the lm_head and the RMSNorm
// weights (sums our own kernels add) stay fp32. Each buffer holds its tensors in order, each padded to
// kParamAlign; the fp32 buffer holds at least the largest tensor (the engine stages weights in it). With
// GradKind::fp32 it is the parameters' buffer (param_buffer_elements over `shards`): data parallel reduces it whole.
struct GradLayout {
  std::vector<size_t> offsets;  // per tensor (model/params.h order), elements into its buffer
  std::vector<bool> bf16;       // per tensor: in the bf16 buffer
  size_t fp32_elements = 0, bf16_elements = 0;
};
GradLayout grad_layout(const std::vector<ParamSpec>& specs, GradKind kind, int shards = 1);

// --fused-projections (train/cuda_model.h) reads a layer's q, k, v (gate, up) weights and writes their gradients as
// one matrix: "" when every such tensor starts where the one before it ends, in the parameters and in the gradient
// buffer of `grads`, else why (the first tensor whose size breaks it, padded to kParamAlign).
std::string fused_projections_unsupported(const ModelConfig& config, GradKind grads);

// The parameter buffer (laid out by param_offsets, `total` elements) cut into the buckets the backward completes one
// after the other, for data parallel's overlapped reduction (train/cuda_zero.h): bucket 0 the tensors before the
// layers (the embedding), 1 + l layer l's, L + 1 those after them (final norm, lm_head). Returns L + 3 bounds:
// bucket b is [bounds[b], bounds[b + 1]); each starts at its first tensor (bucket 0 at 0) and the last ends at
// `total`, so the buckets cover the buffer, alignment padding included. An error if a bucket's tensors are not
// consecutive in the order.
std::vector<size_t> grad_bucket_bounds(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets,
                                       size_t total);

// A slot that belongs to a layer (the others are the arena's once).
inline bool act_slot_per_layer(ActSlot s) { return s <= ActSlot::lse; }
struct ActBuffer {
  ActSlot slot;
  int layer;  // −1: shared by every layer, or not a layer's
  uint64_t offset, bytes;
};
struct ActivationLayout {
  std::vector<ActBuffer> buffers;
  uint64_t bytes = 0;  // the arena's size
};
// fused_projections: the layout train/cuda_model.h's StepPaths::fused_projections takes (gate‖up in one slot, the
// d_gate slot wide enough for d_gate‖d_up and for q‖k‖v). dq_accumulator: the attention scratch also holds the
// atomic backward's fp32 dq accumulator, N·H·(D + 1) floats in all (kernels/attention.h's
// attention_flash2_backward_atomic_scratch_floats; else N·H).
ActivationLayout activation_layout(const ModelConfig& config, uint64_t tokens, int recompute,
                                   bool fused_projections = false, bool dq_accumulator = false);

struct MemoryItem {
  std::string name;
  uint64_t bytes = 0;
  std::string detail;  // how it was computed, for the printed table
};

struct MemoryPlanInput {
  MasterKind master = MasterKind::fp32;
  MomentKind moments = MomentKind::fp32;
  GradKind grads = GradKind::fp32;
  int recompute = 1;
  bool attention_dq_accumulator = false;  // --attention flash2-atomic (activation_layout's dq_accumulator)
  int batch_size = 1;   // pairs per micro-batch: 2·batch_size sequences
  int max_length = 0;   // T
  int grad_accum = 1;   // no memory of its own; memory_plan_fit trades batch size for it
  bool fused_projections = false;  // --fused-projections (activation_layout)
  // Data parallel: the plan is one rank's (one GPU's). Every rank holds the bf16 weights and the fp32 gradients
  // of the whole model (padded to kParamAlign × ranks); with zero1 the master weights and moments are 1/ranks.
  int ranks = 1;
  bool zero1 = true;
  std::vector<MemoryItem> workspaces;  // sized by the kernels (see the top)
};

struct MemoryPlan {
  std::vector<MemoryItem> items;
  uint64_t total() const;
};

MemoryPlan memory_plan(const ModelConfig& config, const MemoryPlanInput& input);

// Data parallel over more than one rank takes --master fp32|none, --moments fp32 and --grads fp32 only: the split
// master's low halves and 8-bit codes are not gathered for checkpoints, 8-bit blocks of 2048 elements would need
// the shard boundaries on them, bf16 gradients are not reduced. "" when `input` is allowed, else why (naming the
// flags to use); the CUDA engine and train_stapo refuse with it, memory_plan_fit never proposes such flags.
std::string data_parallel_unsupported(const MemoryPlanInput& input);

std::string gib(uint64_t bytes);  // "68.56 GiB"

// The table train_stapo prints: one line per item in GiB and MiB, the total, and, when `available` > 0, the
// memory available on the device and the margin (or the shortfall).
std::string memory_plan_table(const MemoryPlan& plan, uint64_t available);

// The flags that differ between two inputs, as a command line would give them ("--master split --recompute 2").
std::string memory_plan_flags(const MemoryPlanInput& from, const MemoryPlanInput& to);

// The cheapest change of flags that makes the plan fit in `available` bytes, or nothing when even the smallest
// configuration does not. Costs, summed: --master split 1 (exact, the same numbers), --recompute 1 from 0: 1,
// --recompute 2: 4 (the layers' forward runs twice), --moments 8bit 8 and --grads bf16 8 (approximations), each
// halving of --batch-size with --grad-accum doubled 16 (the same update, less throughput), --master none 100
// (lossy: stochastic rounding instead of master weights). A flag is only changed towards less memory, and
// --max-length never (it changes the data). Ties go to the smaller total.
std::optional<MemoryPlanInput> memory_plan_fit(const ModelConfig& config, const MemoryPlanInput& input,
                                               uint64_t available);

// --recompute auto (train_stapo's and gpu_step's default): the least recomputation whose plan fits in `available`
// bytes with the input's other flags: 0, else 1, else 2; nothing when none does (the caller then refuses as at
// level 1, naming memory_plan_fit's flags). The levels give the same gradients bit for bit (the engine's tests),
// so the choice trades memory for time only: level 0 saves the backward's re-run of the RMSNorm and SwiGLU
// forwards (2.3–2.5 ms of a 1B step on an H200) for their activations (3 GiB there).
std::optional<int> memory_plan_recompute_auto(const ModelConfig& config, MemoryPlanInput input, uint64_t available);

}  // namespace stapo
