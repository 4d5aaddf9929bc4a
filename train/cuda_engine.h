// The CUDA engine: the Llama/Mistral decoder of model/model.h on the kernels of kernels/, behind the trainer's
// Engine interface (train/engine.h); the GPU twin of train/cpu_engine.h, one device, one stream.
//
// Precision: bf16 weights, activations and gradients, fp32 accumulation in every matmul and reduction; AdamW
// keeps fp32 moments and either fp32 master weights (default) or, with bf16_params, only the bf16 weights,
// updated by stochastic rounding (half the weight memory, unbiased updates).
// Memory (N = rows·T tokens of the largest batch so far, per layer, by recompute level):
//   0: every activation backward reads is kept:  resid, norm1, q, k, v, att, lse, resid2, norm2, gate, up, act
//   1: the RMSNorm outputs and the SwiGLU product are recomputed in backward (cheap, memory-bound), the rest kept
//   2: only the layer's input residual is kept; backward re-runs the layer's forward first (+~1/3 of the
//      layer matmuls, ~1/L of the activations)
// The final reduction: only the M response positions (response_sequence ≥ 0) enter S(y), so their rows of the
// final norm are gathered first (about half of N in preference data: the prompts are skipped) and the fused
// lm_head_forward (lm_head + log-prob + entropy, chunked, no (M, V) logits) runs on those; sequence_sums on the
// device; only the 2B per-sequence sums cross to the host, where the trainer evaluates the loss exactly as for
// the CPU engine, and backward sends back the 2B dℓ/dS (token_dlogp spreads them, dh is scattered back).
// Parameters live in one buffer in the model's parameter order, each tensor starting on a 256-byte boundary.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/attention_cudnn.h"  // defines: CudnnAttention
#include "kernels/embedding.h"  // defines: EmbeddingGradIndex
#include "kernels/lm_head.h"    // defines: LmHeadWorkspace
#include "kernels/matmul.h"     // defines: MatmulContext
#include "model/model.h"        // defines: CpuModel, ModelConfig
#include "train/engine.h"       // defines: Engine

namespace stapo {

// Which attention kernels run: ours (kernels/attention.h) or cuDNN's fused SDPA (kernels/attention_cudnn.h:
// builds with cuDNN only; one sequence per row, so no --packing).
enum class AttentionPath { flash, cudnn };
// --attention's value: "flash" or "cudnn" (the command lines check the name first).
inline AttentionPath attention_path(const std::string& name) {
  return name == "cudnn" ? AttentionPath::cudnn : AttentionPath::flash;
}

struct CudaEngineOptions {
  bool bf16_params = false;  // no fp32 master weights: stochastic rounding into bf16
  int recompute = 1;         // 0, 1 or 2 (see the header comment)
  int max_tokens = 0;        // activations for this many tokens allocated up front (0: as batches arrive)
  int lm_head_chunk_rows = 2048;
  int lm_head_chunk_vocab = 16384;
  bool random_init = false;  // weights ~ N(0, init_stddev), RMSNorm weights 1, drawn on the device (benchmarks)
  float init_stddev = 0.02f;
  uint64_t seed = 0;         // random_init and stochastic rounding
  double peak_tflops = 0;    // the card's dense bf16 peak for MFU (0: train/model_flops.h's table by device name)
  double report_every_s = 0; // > 0: optimizer_step prints MFU and memory to stderr at most this often
  AttentionPath attention = AttentionPath::flash;
};

// Time and model FLOPs of the optimizer steps since the last take_step_stats().
struct CudaStepStats {
  int64_t steps = 0;
  double seconds = 0;      // GPU time from zero_grad() to the end of optimizer_step(), CUDA events
  double model_flops = 0;  // dev/bench/torch_baseline.py's count (train/model_flops.h), non-padding tokens only
  double peak_bytes = 0;   // device memory in use by this process since the engine started, at most
};

double model_tflops(const CudaStepStats& stats);  // model FLOPs per second / 1e12
// "12 steps at 130.2 ms, 480.1 model TFLOP/s, MFU 48.5% of 989, peak device memory 27.10 GiB"
std::string step_stats_summary(const CudaStepStats& stats, double peak_tflops);

class CudaEngine : public Engine {
 public:
  // Uploads the model's weights (or draws random ones when options.random_init); the host model can go after.
  CudaEngine(const CpuModel<float>& model, const CudaEngineOptions& options);
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
  // peak_tflops, when known) and "peak_memory_gib" (since the engine started). Waits for the update to finish.
  StepReport step_report() override;

  // Parameter `index` (model.parameters() order) as fp32 on the host: weights (the master copy when there is
  // one) or the gradient. For checks and checkpoints.
  std::vector<float> parameter_to_host(size_t index, bool grad);
  size_t num_tensors() const { return tensors_.size(); }
  CudaStepStats take_step_stats();
  // Bytes in use on the device now, minus what was in use before this engine (and the CUDA context) existed.
  double device_bytes_in_use();
  cudaStream_t stream() const { return stream_; }
  double peak_tflops() const { return options_.peak_tflops; }  // 0 when the device is not in the table

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    size_t offset = 0, numel = 0;  // elements, into the parameter buffers
    bool is_norm = false;
  };
  // Weight (or gradient) pointers of one decoder layer, bf16.
  struct Layer {
    __nv_bfloat16 *input_norm, *wq, *wk, *wv, *wo, *post_norm, *w_gate, *w_up, *w_down;
  };
  struct Globals {
    __nv_bfloat16 *embed, *final_norm, *lm_head;
  };
  // What one layer's forward writes; several layers share a buffer where the recompute level allows.
  struct LayerActs {
    __nv_bfloat16 *resid, *norm1, *q, *k, *v, *att, *resid2, *norm2, *gate, *up, *act;  // (N, ·)
    float *rstd1, *rstd2, *lse;                                                          // (N), (N), (N, H)
  };

  // The per-sequence sums of a batch to the host, and dℓ/dS back (the host round trip engine v2 removes).
  void forward(const PairBatch& batch, std::vector<double>& logp_sum, std::vector<double>& entropy_sum);
  void backward(const std::vector<double>& dlogp_sum);
  double grad_sum_squares();
  Layer layer_pointers(__nv_bfloat16* base, int l) const;
  Globals global_pointers(__nv_bfloat16* base) const;
  const Tensor& tensor(const std::string& name) const;
  void ensure_tokens(int N);
  void ensure_sequences(int sequences);
  void layer_forward(int l, bool recompute);
  void layer_restore(int l);  // makes acts_[l] whole again before its backward
  void attention_forward_any(const LayerActs& a, const AttentionShape& shape);
  void attention_backward_any(const LayerActs& a, const AttentionShape& shape);
  void sample_memory();

  ModelConfig config_;
  CudaEngineOptions options_;
  cudaStream_t stream_ = nullptr;
  MatmulContext matmul_;
  LmHeadWorkspace lm_head_ws_;
  EmbeddingGradIndex embedding_index_;
#ifdef STAPO_HAVE_CUDNN
  std::unique_ptr<CudnnAttention> cudnn_attention_;  // set with AttentionPath::cudnn
#endif

  std::vector<Tensor> tensors_;
  size_t total_ = 0;               // elements of each parameter buffer (with alignment padding)
  __nv_bfloat16* params_ = nullptr;  // (total_)
  __nv_bfloat16* grads_ = nullptr;   // (total_)
  float* master_ = nullptr;          // (total_), null with bf16_params
  float* m_ = nullptr;               // (total_) AdamW moments
  float* v_ = nullptr;
  std::vector<Layer> w_layers_, g_layers_;
  Globals w_{}, g_{};
  float* inv_freq_ = nullptr;  // (D/2)

  // Activations: one allocation for capacity_ tokens, carved into the buffers below.
  int capacity_ = 0;
  void* arena_ = nullptr;
  std::vector<LayerActs> acts_;
  __nv_bfloat16 *branch_ = nullptr;  // (N, C) attention or MLP output before its residual add; the lm_head's
                                     // dh (M, C) in backward
  __nv_bfloat16 *final_resid_ = nullptr, *final_norm_ = nullptr;  // (N, C)
  float* final_rstd_ = nullptr;                                   // (N)
  int32_t *tokens_ = nullptr, *positions_ = nullptr, *segments_ = nullptr;  // (N)
  // The lm_head's rows: the M response positions, their targets and sequences, the gathered final-norm rows.
  int head_rows_ = 0;                                                               // M
  int32_t *head_index_ = nullptr, *head_targets_ = nullptr, *head_sequence_ = nullptr;  // (M)
  __nv_bfloat16* head_h_ = nullptr;                                                  // (M, C)
  float *logp_ = nullptr, *entropy_ = nullptr, *head_lse_ = nullptr, *dlogp_ = nullptr;  // (M)
  // Backward scratch, reused by every layer.
  __nv_bfloat16 *d_resid_ = nullptr, *d_norm_ = nullptr, *d_att_ = nullptr, *d_q_ = nullptr, *d_k_ = nullptr,
                *d_v_ = nullptr, *d_act_ = nullptr, *d_gate_ = nullptr, *d_up_ = nullptr;
  float* attention_scratch_ = nullptr;  // (N, H)
  float* rmsnorm_scratch_ = nullptr;    // rmsnorm_backward_scratch_floats(C), independent of N
  float* norm_partials_ = nullptr;      // GRAD_NORM_BLOCKS
  float* scalars_ = nullptr;            // [0] grad norm, [1] grad_norm_finish's clip scale (unused), [2] the
                                        // trainer's grad_scale for adamw_update

  // Per-sequence sums and their gradients.
  int sequence_capacity_ = 0;
  float *seq_logp_ = nullptr, *seq_entropy_ = nullptr, *seq_tokens_ = nullptr, *dseq_ = nullptr;  // (2B)
  float* host_sums_ = nullptr;  // pinned (2, 2B): logp then entropy sums

  StepResults results_;
  bool step_has_nonfinite_loss_ = false;  // since zero_grad
  // The last forward's batch.
  int rows_ = 0, T_ = 0, sequences_ = 0;
  bool have_forward_ = false;
  std::vector<int32_t> host_tokens_;
  double forward_flops_ = 0;  // of the last forward (the backward costs twice that)

  // Step statistics: a step runs from zero_grad() to the end of optimizer_step(); its time is read lazily
  // (at the next zero_grad or report) so that the host never waits for the optimizer just to time it.
  void finish_step();
  cudaEvent_t step_start_ = nullptr, step_end_ = nullptr;
  bool step_open_ = false, step_pending_ = false;
  double step_flops_ = 0;
  CudaStepStats stats_, report_stats_, last_step_stats_;  // whole run, since the last report, since step_report
  size_t baseline_used_ = 0;  // device bytes in use before the engine
  double peak_used_ = 0;
  std::chrono::steady_clock::time_point last_report_;
};

}  // namespace stapo
