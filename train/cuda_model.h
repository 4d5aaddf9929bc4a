// The Llama/Mistral decoder on the GPU: the twin of model/model.h's CpuModel, op for op on the kernels of
// kernels/, with the parameters of model/params.h. The engine around it (train/cuda_engine.h) owns the optimizer,
// the loss, checkpoints and statistics, as train/cpu_engine.h does around CpuModel.
//
// Precision: bf16 weights and activations, fp32 accumulation in every matmul and reduction, and fp32 parameter
// gradients: the weight-gradient GEMMs write fp32 (cuBLASLt, β = 1), the RMSNorm, embedding and lm_head
// gradients are added in fp32, so micro-batches accumulate without a bf16 rounding per add (+2 bytes per
// parameter over bf16 gradients). With GradKind::bf16 ("fp32-partial", train/memory_plan.h's grad_layout) the
// layers' matmul weights keep bf16 gradients instead (the GEMMs accumulate into bf16: one rounding per
// micro-batch), the embedding, lm_head and RMSNorm weights fp32: 2 bytes less per layer parameter.
// Memory (N = rows·T tokens of the largest batch so far, per layer, by recompute level):
//   0: every activation backward reads is kept:  resid, norm1, q, k, v, att, lse, resid2, norm2, gate, up, act
//   1: the RMSNorm outputs and the SwiGLU product are recomputed in backward (cheap, memory-bound), the rest kept
//   2: only the layer's input residual is kept; backward re-runs the layer's forward first (+~1/3 of the
//      layer matmuls, ~1/L of the activations)
// The residual adds are fused into the RMSNorm that follows them (kernels/rmsnorm.h), so the residual stream
// entering layer l is formed by layer l's input_norm:  resid_l = resid2_{l-1} + mlp_{l-1}.
// The lm_head runs on the M response positions only (response_sequence ≥ 0, about half of N in preference data:
// the prompts are skipped), plus the chosen sequences' predicted prompt positions when the loss has an NLL over
// prompt + response (model/batch.h's logp_rows): their final-norm rows are gathered (kernels/rows.h) and the fused
// lm_head_forward gives log-prob and entropy per row without (M, V) logits; backward scatters dh back.
// Parameters live in one bf16 buffer in model/params.h's order, each tensor starting on a 256-byte boundary;
// the gradients in an fp32 buffer (and, with GradKind::bf16, a bf16 one) laid out by train/memory_plan.h's
// grad_layout. One stream, the caller's.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/attention_cudnn.h"  // defines: CudnnAttention
#include "kernels/embedding.h"        // defines: EmbeddingGradIndex
#include "kernels/lm_head.h"          // defines: LmHeadWorkspace
#include "kernels/matmul.h"           // defines: MatmulContext
#include "kernels/staging.h"          // defines: HostStaging
#include "model/batch.h"              // defines: PairBatch
#include "model/params.h"             // defines: ParamSpec, LayerParams, GlobalParams
#include "train/cuda_graph.h"         // defines: CudaGraphs
#include "train/cuda_phase_timer.h"   // defines: PhaseTimer, Phase
#include "train/memory_plan.h"        // defines: GradKind, GradLayout

namespace stapo {

// Which attention kernels run: ours (kernels/attention.h: flash2, the tensor-core ones and the default; flash2_atomic,
// the same forward with the atomic backward, whose dq is not bit-reproducible; flash2_narrow, the tensor-core ones
// with 32-row tiles; or flash, the SIMT ones) or cuDNN's fused SDPA (kernels/attention_cudnn.h: builds with cuDNN
// only; one sequence per row, so no --pack).
enum class AttentionPath { flash, flash2, flash2_atomic, flash2_narrow, cudnn };
// --attention's value: "flash", "flash2", "flash2-atomic", "flash2-narrow" or "cudnn" (the command lines check the
// name first).
inline AttentionPath attention_path(const std::string& name) {
  return name == "cudnn"           ? AttentionPath::cudnn
         : name == "flash2"        ? AttentionPath::flash2
         : name == "flash2-atomic" ? AttentionPath::flash2_atomic
         : name == "flash2-narrow" ? AttentionPath::flash2_narrow
                                   : AttentionPath::flash;
}

// Faster code paths of the training step (issue #15), each computing the same as the baseline (to fp32 summation
// order). Measured on an H200 (docs/benchmarks.md): the first five took 5 ms off a 222 ms step with the SIMT
// attention and, with fused_projections, 4.7 ms off 136.7 with flash2. The four deterministic ones that moved a
// phase are on by default (grad_first_write, rmsnorm_warp, device_embedding_index, adamw_multi_tensor); the others
// stay off: matmul_autotune makes the last bits vary between runs, fused_projections alone measured no gain, and
// cuda_graph rarely replays on real batches. train_stapo's and gpu_step's flags (train/cuda_flags.h) set each;
// baseline() is every switch off, the code the others are tested against.
struct StepPaths {
  // The first backward after zero_grad writes the gradients (β = 0 GEMMs, RMSNorm dweight =, the lm_head's first
  // chunk =) instead of adding to a memset buffer; only the embedding's (a scatter into the rows of the batch's
  // tokens) is still zeroed, one tensor. Off: zero_grad memsets both gradient buffers.
  bool grad_first_write = true;
  // RMSNorm backward with one warp per row (kernels/rmsnorm.h) where the hidden size allows (C ≤ 2048). Off: one
  // block per row.
  bool rmsnorm_warp = true;
  // The embedding gradient's index (positions grouped by token) built on the device from the uploaded tokens
  // (kernels/embedding.h). Off: sorted on the host and uploaded every backward.
  bool device_embedding_index = true;
  // The engine's AdamW: one launch over a table of every tensor (kernels/adamw_compact.h), bit for bit the per-tensor
  // launches. Off: a launch per tensor (~150 for a 16-layer model).
  bool adamw_multi_tensor = true;
  // cuBLASLt: each new shape times the heuristic's first kMatmulAutotuneCandidates algorithms once and keeps the
  // fastest (kernels/matmul.h; the choice, and so the last bits, may differ between runs). Off: its first.
  bool matmul_autotune = false;
  // One GEMM for a layer's q, k and v projections and one for gate and up, forward and backward (input gradient and
  // weight gradient each), over the weights as model/params.h lays them out: q‖k‖v and gate‖up are consecutive
  // matrices in every buffer (the constructor checks it: train/memory_plan.h's fused_projections_unsupported). The
  // q‖k‖v output is rotated (RoPE) and copied into the attention's q, k, v buffers, and their gradients back into
  // q‖k‖v rows; gate‖up rows stay side by side (SwiGLU reads them with a row stride of 2F). Off: a GEMM per
  // projection.
  bool fused_projections = false;
  // The model's forward and backward of a micro-batch (after its uploads) and the optimizer's norm and AdamW
  // captured into CUDA graphs per shape and replayed (train/cuda_graph.h); implies device_embedding_index and
  // adamw_multi_tensor (train/cuda_engine.h says why). Off: every kernel launched from the host each time.
  bool cuda_graph = false;
  static StepPaths baseline() {
    StepPaths none;
    none.grad_first_write = none.rmsnorm_warp = none.device_embedding_index = none.adamw_multi_tensor = false;
    return none;
  }
  bool is_baseline() const {
    return !(grad_first_write || rmsnorm_warp || device_embedding_index || adamw_multi_tensor || matmul_autotune ||
             fused_projections || cuda_graph);
  }
  std::string description() const;  // ", gradients first written without a memset, ..." ("" with none)
};

struct CudaModelOptions {
  int recompute = 1;   // 0, 1 or 2 (see the header comment)
  int max_tokens = 0;  // activations for this many tokens allocated up front (0: as batches arrive)
  int lm_head_chunk_rows = 2048;
  int lm_head_chunk_vocab = 16384;
  AttentionPath attention = AttentionPath::flash2;
  GradKind grads = GradKind::fp32;  // the layers' matmul-weight gradients (see the header comment)
  // Data parallel over this many ranks (train/cuda_zero.h): the parameter and (fp32) gradient buffers are padded to
  // a multiple of shards × the alignment (train/memory_plan.h's param_buffer_elements), so that every rank's ZeRO-1
  // share of them is equal and aligned.
  int shards = 1;
  StepPaths paths;
};

class CudaModel {
 public:
  // Weights and gradients zero; the engine fills params().
  CudaModel(const ModelConfig& config, const CudaModelOptions& options, cudaStream_t stream);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  const std::vector<size_t>& offsets() const { return offsets_; }  // elements, into params() and grads()
  size_t buffer_elements() const { return total_; }  // of params() (and fp32 grads()), padding (always 0) included
  __nv_bfloat16* params() { return params_; }        // (buffer_elements())
  // Gradients: tensor i at grad_layout().offsets[i] of grads() (fp32) or, where grad_layout().bf16[i], of
  // grads_bf16(); the padding between tensors stays 0.
  const GradLayout& grad_layout() const { return grad_layout_; }
  float* grads() { return grads_; }                    // (grad_layout().fp32_elements)
  __nv_bfloat16* grads_bf16() { return grads_bf16_; }  // (grad_layout().bf16_elements), null with GradKind::fp32

  // The gradients are zero from here on: with grad_first_write lazily (the next backward writes them), else by a
  // memset now. clear_grads always memsets; settle_grads does when a lazy zero is still pending (no backward came),
  // so that grads() holds the values: call it before reading them outside backward.
  void zero_grad();
  void clear_grads();
  void settle_grads();
  // The decoder and the lm_head on the batch's response positions, and with chosen_prompts on the chosen
  // sequences' predicted prompt positions too (pair_batch_validate'd first). Enqueued on the stream; the host
  // waits for nothing but, rarely, an upload two batches back (kernels/staging.h) or a larger activation arena.
  void forward(const PairBatch& batch, bool chosen_prompts = false);
  int response_rows() const { return response_rows_; }                   // M of the last forward (rows of the lm_head)
  const float* logp() const { return logp_; }                            // (M) target log-prob per position
  const float* entropy() const { return entropy_; }                      // (M) entropy of its distribution
  const int32_t* response_sequence() const { return response_sequence_; }  // (M) its sequence, 0..2B−1; −1: a prompt
  // (M) the chosen prompt a row belongs to (even), −1 for response rows; null unless forward had chosen_prompts.
  const int32_t* prompt_sequence() const { return have_prompt_rows_ ? prompt_sequence_ : nullptr; }
  float* dlogp() { return dlogp_; }                                      // (M) set by the caller for backward
  // Accumulates (+=) into grads() the gradient of Σ_m dlogp[m]·logp[m] for the batch of the last forward (writes
  // it, after a lazy zero_grad).
  void backward();
  // Called by backward, on the host, once the stream holds every write to a bucket of grad_bucket_bounds
  // (train/memory_plan.h) — L + 1 (final norm, lm_head), then L, ..., 1 (layer b − 1), then 0 (embedding) — so that
  // data parallel can reduce that bucket while the rest of the backward runs (train/cuda_zero.h). Null: none.
  void set_grads_ready(std::function<void(int bucket)> hook) { grads_ready_ = std::move(hook); }
  // Marks each phase of forward and backward on `timer` (nullptr: off; dev/bench/gpu_step --phases).
  void set_phase_timer(PhaseTimer* timer) { timer_ = timer; }
  // --cuda-graph's counts for the forward and the backward ("" without it).
  std::string graph_summary() const;

 private:
  // What one layer's forward writes; several layers share a buffer where the recompute level allows.
  // gate and up (N, F) have rows gate_up_stride() apart: F, or 2F with fused projections (up = gate + F); the
  // same for d_gate_ and d_up_.
  struct LayerActs {
    __nv_bfloat16 *resid, *norm1, *q, *k, *v, *att, *resid2, *norm2, *gate, *up, *act;  // (N, ·)
    float *rstd1, *rstd2, *lse;                                                          // (N), (N), (N, H)
  };

  void ensure_tokens(int N);
  int gate_up_stride() const {
    return options_.paths.fused_projections ? 2 * config_.intermediate_size : config_.intermediate_size;
  }
  void copy_rows(__nv_bfloat16* to, size_t to_stride, const __nv_bfloat16* from, size_t from_stride, int rows,
                 int width);
  // The launches of forward and backward once the batch is on the device: the same for the same key
  // (--cuda-graph's, in forward() and backward()).
  void forward_enqueue();
  void backward_enqueue(bool first);
  void layer_forward(int l, bool recompute);
  void layer_restore(int l);  // makes acts_[l] whole again before its backward
  void attention_forward_any(const LayerActs& a, const AttentionShape& shape);
  void attention_backward_any(const LayerActs& a, const AttentionShape& shape);
  // Time from here on is `phase`'s; inside layer_restore everything is the recompute phase's.
  void phase(Phase p) {
    if (timer_ && !restoring_) timer_->mark(p);
  }
  void grads_done(int bucket) {
    if (grads_ready_) grads_ready_(bucket);
  }

  ModelConfig config_;
  CudaModelOptions options_;
  cudaStream_t stream_;
  PhaseTimer* timer_ = nullptr;
  bool restoring_ = false;
  bool grads_pending_zero_ = false;  // zero_grad was lazy and no backward has written the gradients since
  std::function<void(int)> grads_ready_;
  MatmulContext matmul_;
  LmHeadWorkspace lm_head_ws_;
  EmbeddingGradIndex embedding_index_;
  HostStaging staging_;  // the batch's uploads
#ifdef STAPO_HAVE_CUDNN
  std::unique_ptr<CudnnAttention> cudnn_attention_;  // set with AttentionPath::cudnn
#endif
  std::unique_ptr<CudaGraphs> forward_graphs_, backward_graphs_;  // paths.cuda_graph, else null

  std::vector<ParamSpec> specs_;
  std::vector<size_t> offsets_;
  size_t total_ = 0;
  __nv_bfloat16* params_ = nullptr;  // (total_)
  GradLayout grad_layout_;
  float* grads_ = nullptr;                 // (grad_layout_.fp32_elements)
  __nv_bfloat16* grads_bf16_ = nullptr;    // (grad_layout_.bf16_elements)
  ParamPointers<__nv_bfloat16> w_;
  ParamPointers<float> g_;                 // valid for the tensors in grads_
  ParamPointers<__nv_bfloat16> g_bf16_;    // valid for the tensors in grads_bf16_ (GradKind::bf16 only)
  float* inv_freq_ = nullptr;   // (D/2)
  float* rmsnorm_scratch_ = nullptr;  // rmsnorm_backward_scratch_floats(C), independent of N

  // Activations: one allocation for capacity_ tokens, carved into the buffers below.
  int capacity_ = 0;
  void* arena_ = nullptr;
  std::vector<LayerActs> acts_;
  __nv_bfloat16* branch_ = nullptr;  // (N, C) attention or MLP output before its residual add; the lm_head's
                                     // dh (M, C) in backward
  __nv_bfloat16 *final_resid_ = nullptr, *final_norm_ = nullptr;  // (N, C)
  float* final_rstd_ = nullptr;                                   // (N)
  int32_t *tokens_ = nullptr, *positions_ = nullptr, *segments_ = nullptr;  // (N)
  // The lm_head's rows (model/batch.h's logp_rows): the M positions, their targets and sequences, the gathered
  // final-norm rows.
  int response_rows_ = 0;                                                                       // M
  int32_t *response_index_ = nullptr, *response_targets_ = nullptr, *response_sequence_ = nullptr;  // (M)
  int32_t* prompt_sequence_ = nullptr;  // (M), uploaded only with chosen prompts
  bool have_prompt_rows_ = false;
  __nv_bfloat16* response_h_ = nullptr;                                                         // (M, C)
  float *logp_ = nullptr, *entropy_ = nullptr, *response_lse_ = nullptr, *dlogp_ = nullptr;     // (M)
  // Backward scratch, reused by every layer.
  __nv_bfloat16 *d_resid_ = nullptr, *d_norm_ = nullptr, *d_att_ = nullptr, *d_q_ = nullptr, *d_k_ = nullptr,
                *d_v_ = nullptr, *d_act_ = nullptr, *d_gate_ = nullptr, *d_up_ = nullptr;
  // With paths.fused_projections: the (N, (H + 2·Hkv)·D) q‖k‖v rows, the projection's output in forward and its
  // gradient in backward, in d_gate_'s memory (free at both times: train/memory_plan.h sizes it for both).
  __nv_bfloat16* qkv_ = nullptr;
  float* attention_scratch_ = nullptr;  // (N, H); flash2_atomic: (N, H, D) dq accumulator, then (N, H)

  // The last forward's batch shape and tokens (the embedding backward groups positions by token on the host,
  // without paths.device_embedding_index).
  int rows_ = 0, T_ = 0;
  bool have_forward_ = false;
  std::vector<int32_t> host_tokens_;
};

}  // namespace stapo
