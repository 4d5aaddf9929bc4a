// The CUDA engine: the trainer's Engine (train/engine.h) around the GPU model (train/cuda_model.h), as
// train/cpu_engine.h is around CpuModel. It owns the optimizer state, the loss, checkpoints and statistics; one
// device, one stream.
//
// The loss on the device (the fused final reduction's last steps, kernels/preference_loss.h, with
// model/ops/preference_loss.h's loss_pair): per micro-batch, sequence_sums of the model's per-position log-probs
// and entropies, then pair_loss writes each pair's PairLoss and dℓ/dS into device arrays that collect every pair
// since the last take_results, and (with backward) token_dlogp spreads dℓ/dS to the response positions for the
// model's backward. An NLL over prompt + response (loss_uses_prompt: TRL's ORPO) adds the chosen prompts' rows to
// the model's lm_head, their sums P_w and |x| − 1, and ∂ℓ/∂P_w spread to those rows (token_dlogp_prompt); other
// losses run none of it. Nothing crosses to the host between forward and backward.
// The optimizer step on the device: the gradient norm, the clip factor and the decision to update (norm finite
// and every loss of the step finite) come from kernels/grad_norm.h; AdamW (kernels/adamw_compact.h) reads the factor
// and the decision. take_results() copies the step's per-pair results, the norm and the decision to pinned host
// memory once (enqueued before AdamW when there is an update) and waits for that copy only (under data parallel
// for the whole step, with a timeout: CudaZero::wait): the host's one wait per step. Batch uploads go through
// pinned buffers (kernels/staging.h), so they do not wait for the stream.
//
// Precision: bf16 weights and activations, fp32 gradients, or with --grads bf16 bf16 ones for the layers'
// matmul weights (train/cuda_model.h). AdamW (kernels/adamw_compact.h, one launch per tensor, or one for all of them
// with paths.adamw_multi_tensor) keeps, by --master:
// fp32 master weights (default, 4 bytes per parameter), the split master (the low 16 bits beside the bf16
// weights: the fp32 master exactly, 2 bytes, and the same numbers as fp32), or none (bf16 weights updated by
// stochastic rounding); by --moments: fp32 m and v (8 bytes) or 8-bit block-wise ones (2 bytes + 8 per block of
// 2048; Dettmers et al., ICLR 2022), the input embedding's fp32 (train/adamw.h's keeps_fp32_moments). Per
// parameter: 2 (weights) + 4 or 2 (gradients) + master + moments. The device memory of a configuration, before
// anything is allocated: cuda_engine_plan_input with train/memory_plan.h, from the sizes the model and the kernels
// allocate.
//
// Data parallel (options.data_parallel, train/cuda_zero.h): one process per GPU over NCCL; the gradients are
// reduced over the ranks in optimizer_step (with zero_overlap during the last backward of the step, which
// StepScale::last marks), and under ZeRO-1 a rank keeps master weights and moments for its
// shard of the parameters only (2 + 4 + 12/W bytes per parameter, or 2 + 4 + 8/W with --master none): AdamW runs
// on each tensor's part in the shard. With more than one rank the engine takes --master fp32|none, --moments fp32
// and --grads fp32 only (train/memory_plan.h's data_parallel_unsupported): the split master's low halves and 8-bit
// moments are neither gathered for checkpoints nor cut at 2048-element block boundaries, and bf16 gradients are not
// reduced.
// save_model and save_optimizer are then collective (rank 0 writes files that do not depend on W) and
// weights_to_cpu / parameter_to_host give the bf16 weights where this rank holds only part of the master copy.
//
// CUDA graphs (paths.cuda_graph, --cuda-graph; train/cuda_graph.h): four pieces of the step are captured per key and
// replayed — the model's forward of a micro-batch after its uploads (key: rows, T, lm_head rows, chosen prompts),
// its backward (the same shape and whether it is the step's first write of the gradients), the optimizer's norm
// and clip decision (max_grad_norm) and AdamW (its tables' device addresses and sizes). The loss between forward and
// backward, the results copy and the uploads stay eager. What a replay cannot see must not be inside a piece: the
// per-batch host values are moved before it (the batch's uploads; AdamW's step constants, lr, bias corrections and
// seeds, travel in its table, uploaded before the norm) or taken off the host — so --cuda-graph implies
// device_embedding_index (the host-built index's group count sizes the embedding backward's grid) and
// adamw_multi_tensor (the per-tensor launches take the step's constants as kernel arguments), both bit for bit the
// paths they replace. Refused: data parallel (collectives and --zero-overlap's host hooks in the backward), --attention
// cudnn (its padding memsets are sized from host lengths per batch; its workspace grows as it goes) and a phase
// timer (--phases). A key runs eagerly first, so lazy allocations and cuBLASLt autotuning happen outside a capture;
// a regrown activation arena drops the model's graphs. The lm_head's row count M (the batch's response positions,
// model/batch.h's logp_rows) is in the model's keys: fixed-shape batches (gpu_step's) replay every step, but
// training batches whose M differs batch to batch get a new key nearly every time and so run eagerly (a key looked
// up, nothing captured); rounding M up to buckets of padding rows would be the next step. Ran on an H200 (CudaEngine.CudaGraphEqualsLaunchingEachKernel:
// bit for bit the engine without graphs over 6 steps); its effect on step time has not been measured beyond one
// short gpu_step run (docs/benchmarks.md).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "kernels/adamw_compact.h"  // defines: AdamWTensorTable
#include "kernels/staging.h"    // defines: HostStaging
#include "model/model.h"        // defines: CpuModel, ModelConfig
#include "model/ops/adamw.h"    // defines: AdamWState, MasterKind, MomentKind
#include "train/adamw.h"        // defines: Q8MomentLayout
#include "train/cuda_graph.h"   // defines: CudaGraphs
#include "train/cuda_model.h"   // defines: CudaModel, AttentionPath
#include "train/cuda_zero.h"    // defines: CudaZero, Collective
#include "train/engine.h"       // defines: Engine
#include "train/memory_plan.h"  // defines: MemoryPlanInput
#include "train/optimizer_state.h"  // defines: Q8MomentState

namespace stapo {

struct CudaEngineOptions {
  MasterKind master = MasterKind::fp32;  // --master: fp32, split (low halves), none (stochastic rounding)
  MomentKind moments = MomentKind::fp32; // --moments: fp32 or 8-bit block-wise
  GradKind grads = GradKind::fp32;       // --grads: fp32, or bf16 for the layers' matmul weights
  int recompute = 1;         // 0, 1 or 2 (train/cuda_model.h)
  int max_tokens = 0;        // activations for this many tokens allocated up front (0: as batches arrive)
  int lm_head_chunk_rows = 2048;
  int lm_head_chunk_vocab = 16384;
  float init_stddev = 0.02f; // random weights: N(0, init_stddev), RMSNorm weights 1 (kernels/random_init.h)
  uint64_t seed = 0;         // random weights and stochastic rounding
  double peak_tflops = 0;    // the card's dense bf16 peak for MFU (0: train/model_flops.h's table by device name)
  double report_every_s = 0; // > 0: optimizer_step prints MFU and memory to stderr at most this often
  AttentionPath attention = AttentionPath::flash2;
  // > 0: behave as on a card of this many bytes in all (testing an 80 GB claim on a larger card): the engine first
  // reserves what is free beyond cuda_engine_available_bytes, so an allocation past it fails as it would there.
  uint64_t memory_cap_bytes = 0;
  Collective* data_parallel = nullptr;  // the job's ranks, kept by reference (null: one process)
  bool zero1 = true;                    // under data_parallel: ZeRO-1, else all-reduced gradients
  StepPaths paths;  // faster code paths of the step: four on by default, as measured (train/cuda_model.h)
  // Under data_parallel: reduce the gradients bucket by bucket during the step's last backward, on a second stream
  // (train/cuda_zero.h), rather than in one call in optimizer_step. Off by default until a GPU run has validated it.
  bool zero_overlap = false;
};

// The step paths an engine with these runs: --cuda-graph implies device_embedding_index and adamw_multi_tensor.
StepPaths cuda_graph_paths(StepPaths paths);

// What the engine will allocate for micro-batches of `batch_size` pairs of `max_length` tokens, as the planner's
// input: its flags and the kernels' workspaces sized by their own functions (memory_plan(config, input) gives
// every item). Needs no device.
MemoryPlanInput cuda_engine_plan_input(const ModelConfig& config, const CudaEngineOptions& options, int batch_size,
                                       int max_length);
// The bytes a new engine may allocate on this process's device: cudaMemGetInfo's free memory, or with `cap_bytes`
// > 0 what a card of cap_bytes in all would have free (cap_bytes minus what is in use: the CUDA context, ...).
uint64_t cuda_engine_available_bytes(uint64_t cap_bytes);

// Time and model FLOPs of the optimizer steps the device has finished.
struct CudaStepStats {
  int64_t steps = 0;
  double seconds = 0;      // GPU time from zero_grad() to the end of optimizer_step(), CUDA events
  double model_flops = 0;  // what the objective needs (train/model_flops.h): the lm_head on response positions only
  double model_flops_all_tokens = 0;  // the same with the lm_head on every token (the count before engine v2)
  double peak_bytes = 0;   // device memory in use by this process since the engine started, at most
};

double model_tflops(const CudaStepStats& stats);  // model FLOPs per second / 1e12
// "12 steps at 130.2 ms, 480.1 model TFLOP/s, MFU 48.5% of 989 (all-token lm_head count: 52.3%), peak device
// memory 27.10 GiB"
std::string step_stats_summary(const CudaStepStats& stats, double peak_tflops);

class CudaEngine : public Engine {
 public:
  // Uploads the model's weights; the host model can go after.
  CudaEngine(const CpuModel<float>& model, const CudaEngineOptions& options);
  // Random weights drawn on the device (benchmarks: no host model of several GB).
  CudaEngine(const ModelConfig& config, const CudaEngineOptions& options);
  ~CudaEngine() override;
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  void run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) override;
  void zero_grad() override;
  void optimizer_step(const OptimizerUpdate& update) override;
  StepResults take_results() override;
  void save_model(const std::string& dir) override;
  void save_optimizer(const std::string& path) override;
  void load_optimizer(const std::string& path) override;
  std::string description() const override;
  std::unique_ptr<CpuModel<float>> weights_to_cpu() override;  // the master weights, else the bf16 ones
  // "step_time_s" (CUDA events, zero_grad to the end of the update), "tflops" (model TFLOP/s), "mfu" (of
  // peak_tflops, when known), "mfu_all_tokens" (the lm_head counted on every token) and "peak_memory_gib" (since
  // the engine started), over the steps the device finished since the last report: usually the step before the
  // one just taken, since reading them never waits for the device.
  StepReport step_report() override;

  // Parameter `index` (model/params.h order) as fp32 on the host: weights (the master copy when this rank holds
  // all of it) or the gradient (after a ZeRO-1 step: summed over ranks in this rank's shard only). Waits for the
  // stream. For checks and checkpoints.
  std::vector<float> parameter_to_host(size_t index, bool grad);
  size_t num_tensors() const { return model_->specs().size(); }
  // Waits for every optimizer step enqueued so far, then returns the statistics since the last call.
  CudaStepStats take_step_stats();
  // Bytes in use on the device now, minus what was in use before this engine (and the CUDA context) existed.
  double device_bytes_in_use();
  cudaStream_t stream() const { return stream_; }
  // Marks the phases of every step on `timer` from now on (nullptr: off); train/cuda_phase_timer.h. Refused with
  // --cuda-graph.
  void set_phase_timer(PhaseTimer* timer);
  double peak_tflops() const { return options_.peak_tflops; }  // 0 when the device is not in the table
  // --cuda-graph's counts per captured piece (train/graph_cache.h's summary), "" without it; also printed to stderr
  // when the engine goes.
  std::string graph_summary() const;

 private:
  // Written on the device by the step's kernels; copied to the host with the step's results.
  struct StepScalars {
    float grad_norm;     // grad_norm_finish: before clipping
    float clip_scale;    // grad_norm_finish: what AdamW multiplies the gradients by
    int apply;           // grad_norm_finish: 1 when AdamW updates (norm and losses finite)
    int nonfinite_loss;  // pair_loss: 1 once a loss since zero_grad was not finite
  };
  // The results of the pairs since the last take_results, pair p of them at slot p (sequences 2p, 2p+1).
  struct PairSlots {
    int capacity = 0;  // pairs
    float *seq_logp = nullptr, *seq_entropy = nullptr, *seq_tokens = nullptr;  // (2·capacity): S, Σ H_t, |y|
    float *seq_prompt_logp = nullptr, *seq_prompt_tokens = nullptr;  // (2·capacity): P, |x| − 1 (prompt NLL only)
    PairLoss<float>* losses = nullptr;                                          // (capacity)
  };
  // A step being timed: events around it and its model FLOPs, read once the device has passed `end`.
  struct TimedStep {
    cudaEvent_t start = nullptr, end = nullptr;
    double flops = 0, flops_all_tokens = 0;
  };

  CudaEngine(const ModelConfig& config, const CpuModel<float>* weights, const CudaEngineOptions& options);
  static CudaModelOptions model_options(const CudaEngineOptions& options);
  // The optimizer state of this rank's part of parameter `index` (model/params.h order): the whole tensor unless
  // ZeRO-1 shards it (n = 0 when this rank holds none of it); index_base is the part's first index in the tensor.
  AdamWState tensor_state(size_t index) const;
  // The kind of moments tensor `index` keeps: options.moments, but fp32 for the embedding (keeps_fp32_moments).
  MomentKind tensor_moments(size_t index) const {
    return options_.moments == MomentKind::q8 ? q8_layout_.kind[index] : MomentKind::fp32;
  }
  void q8_copy(Q8MomentState& host, cudaMemcpyKind kind);  // 8-bit moments to or from a checkpoint's layout
  // The first `pairs` slots of `from` into `to` (device or pinned host, as `kind` says), in stream order; the
  // prompt sums only when the pending pairs have them.
  void copy_slots(const PairSlots& to, const PairSlots& from, int pairs, cudaMemcpyKind kind);
  static void free_slots(PairSlots& slots, bool pinned);  // device memory, or pinned host memory
  void ensure_slots(int pairs);  // room for `pairs` pending pairs, keeping those already there
  void ensure_batch_sequences(int sequences);
  void enqueue_results_copy();
  void poll_steps(bool wait);  // reads the finished timed steps (all of them, waiting, with wait)
  cudaEvent_t take_event();
  void sample_memory();

  CudaEngineOptions options_;
  cudaStream_t stream_ = nullptr;
  size_t baseline_used_ = 0;  // device bytes in use before the engine (after the CUDA context)
  std::unique_ptr<CudaModel> model_;
  void* ballast_ = nullptr;  // memory_cap_bytes: what is reserved beyond the cap
  PhaseTimer* timer_ = nullptr;
  // The optimizer state (model/ops/adamw.h) of ranks_->updates(), the model buffer's range this rank updates (all
  // of it unless ZeRO-1 shards it), at element offsets from its start; absmax at block offsets (8-bit moments, one
  // rank only).
  float* master_ = nullptr;                          // (range) MasterKind::fp32
  int16_t* low_ = nullptr;                           // (range) MasterKind::split: the master's low halves
  float *m_ = nullptr, *v_ = nullptr;  // (range) MomentKind::fp32; with q8 (fp32_elements) the embedding's
  // MomentKind::q8 (one rank, the whole model): each tensor's place in m_, v_ or the codes, and its first block.
  Q8MomentLayout q8_layout_;
  uint8_t *m_code_ = nullptr, *v_code_ = nullptr;    // (code_elements) MomentKind::q8
  float *m_absmax_ = nullptr, *v_absmax_ = nullptr;  // (blocks) MomentKind::q8: each 8-bit tensor's blocks in order
  float* norm_partials_ = nullptr;  // GRAD_NORM_BLOCKS + 1
  // Data parallel, or the whole buffer for one process.
  std::unique_ptr<CudaZero> ranks_;
  StepScalars* scalars_ = nullptr;  // device
  StepScalars* host_scalars_ = nullptr;  // pinned

  // The loss of each micro-batch: dℓ/dS of its sequences, and its reference log-probs, uploaded.
  int batch_sequence_capacity_ = 0;
  float *dseq_ = nullptr, *reference_logps_ = nullptr, *dprompt_ = nullptr;  // (2B); dprompt_: dℓ/dP (prompt NLL)
  HostStaging staging_;
  AdamWTensorTable adamw_tables_[2];  // options.paths.adamw_multi_tensor's tables, by MomentKind (fp32, q8)
  std::unique_ptr<CudaGraphs> norm_graphs_, adamw_graphs_;  // --cuda-graph (paths.cuda_graph), else null
  // Results of the pairs since the last take_results: device slots, their pinned copies, and what the host
  // knows of each pair (its id and reference log-probs, 0 without).
  PairSlots slots_, host_slots_;
  int pending_pairs_ = 0;
  bool pending_prompt_ = false;  // the pending pairs have prompt sums (all of them: one loss between takes)
  std::vector<int64_t> pending_ids_;
  std::vector<float> pending_refs_;  // (2·pending_pairs_)
  bool results_copied_ = false;  // the copy of every pending pair (and the scalars) is enqueued
  bool have_update_ = false;     // an optimizer_step since the last take_results
  cudaEvent_t results_ready_ = nullptr;

  // Step statistics, read without waiting (poll_steps).
  std::deque<TimedStep> timed_steps_;  // recorded, not yet read
  std::vector<cudaEvent_t> free_events_;
  TimedStep open_step_;  // from zero_grad to optimizer_step
  bool step_open_ = false;
  CudaStepStats stats_, report_stats_, last_stats_;  // whole run, since the last stderr report, since step_report
  double peak_used_ = 0;
  std::chrono::steady_clock::time_point last_report_;
};

}  // namespace stapo
