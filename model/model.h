// The fp32 CPU reference model: Llama / Mistral forward and backward exactly as HF's LlamaForCausalLM /
// MistralForCausalLM, composed from the ops in model/ops/. T = float (the CPU trainer) or double (finite-
// difference gradient checks). Parameters and their gradients each live in one contiguous buffer, in the order
// of model/params.h (parameters()); activations of the last forward are kept for backward (sizes in
// docs/model.md).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/batch.h"   // defines: TokenBatch
#include "model/config.h"  // defines: ModelConfig
#include "model/params.h"  // defines: ParamSpec, LayerParams, GlobalParams, model_check_tensors
#include "model/safetensors.h"  // defines: SafetensorsReader, DType

namespace stapo {

template <typename T>
struct Parameter {
  std::string name;            // HF tensor name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // HF shape, e.g. (H·D, C)
  T* data = nullptr;
  T* grad = nullptr;
  size_t numel = 0;
  bool is_norm = false;  // RMSNorm weight: AdamW applies no weight decay to these
};

template <typename T>
class CpuModel {
 public:
  explicit CpuModel(const ModelConfig& config);  // parameters zero-initialised
  CpuModel(const CpuModel&) = delete;
  CpuModel& operator=(const CpuModel&) = delete;

  const ModelConfig& config() const { return config_; }
  std::vector<Parameter<T>>& parameters() { return params_; }
  const std::vector<Parameter<T>>& parameters() const { return params_; }
  Parameter<T>& parameter(const std::string& name);  // error naming it when absent
  T* param_data() { return param_buffer_.data(); }  // all parameters, contiguous
  T* grad_data() { return grad_buffer_.get(); }
  size_t num_params() const { return param_buffer_.size(); }

  // Per position of batch (rows·T): log-prob of targets[i] and entropy of the next-token distribution,
  // both 0 where targets[i] < 0. Keeps the activations backward needs.
  void forward(const TokenBatch& batch, T* logp, T* entropy);
  // Accumulates (+=) into every parameter's gradient the gradient of Σ_i dlogp[i]·logp[i] for the batch of
  // the last forward.
  void backward(const T* dlogp);
  void zero_grad();
  // Full logits (rows·T, V) of a batch, for tests. Runs a forward (replacing the saved activations).
  std::vector<T> logits(const TokenBatch& batch);

 private:
  // Pointers into param_buffer_ (or grad_buffer_), from model/params.h.
  using Layer = LayerParams<T>;
  using Globals = GlobalParams<T>;
  // Saved by forward for backward, per layer l (N = rows·T tokens).
  struct LayerActivations {
    std::vector<T> resid;    // (N, C) residual stream entering the layer
    std::vector<T> rstd1;    // (N)
    std::vector<T> norm1;    // (N, C) input_norm output
    std::vector<T> q;        // (N, H, D) after RoPE
    std::vector<T> k;        // (N, Hkv, D) after RoPE
    std::vector<T> v;        // (N, Hkv, D)
    std::vector<T> att;      // (N, H, D) attention output, before o_proj
    std::vector<T> lse;      // (N, H)
    std::vector<T> resid2;   // (N, C) residual after attention
    std::vector<T> rstd2;    // (N)
    std::vector<T> norm2;    // (N, C) post_attention_norm output
    std::vector<T> gate;     // (N, F)
    std::vector<T> up;       // (N, F)
    std::vector<T> act;      // (N, F) silu(gate)·up
  };

  void run_forward(const TokenBatch& batch);  // fills the activations up to final_norm_out_
  void resize_activations(int N);

  ModelConfig config_;
  std::vector<T> param_buffer_;
  struct FreeDeleter {
    void operator()(T* p) const { std::free(p); }
  };
  // calloc'd: the OS commits its zero pages only when they are first written, so a model that only runs
  // forward (generate, score, the trainer's eval samples) costs its weights alone.
  std::unique_ptr<T[], FreeDeleter> grad_buffer_;
  std::vector<Parameter<T>> params_;
  std::vector<Layer> w_layers_, g_layers_;  // weights and gradients per layer
  Globals w_, g_;
  std::vector<T> inv_freq_;  // (D/2)

  // The last forward's batch and activations.
  TokenBatch batch_;
  std::vector<LayerActivations> acts_;
  std::vector<T> final_resid_;     // (N, C) residual after the last layer
  std::vector<T> final_rstd_;      // (N)
  std::vector<T> final_norm_out_;  // (N, C) the lm_head's input
  // Backward scratch, reused across layers.
  std::vector<T> d_resid_, d_norm_, d_att_, d_q_, d_k_, d_v_, d_act_, d_gate_, d_up_;
};

// Loads config.json + safetensors (single or sharded) from an HF directory. Every tensor is checked against
// the config; all missing, unexpected and mis-shaped tensors are reported by name in one error.
template <typename T>
std::unique_ptr<CpuModel<T>> model_load_hf(const std::string& dir);
// Copies the checkpoint's tensors (validated as above) into an existing model; `where` names it in errors.
template <typename T>
void model_load_weights(CpuModel<T>& model, const SafetensorsReader& reader, const std::string& where);
// Writes config.json + model.safetensors (or shards + index when larger than max_shard_bytes > 0) in
// F32, F64 or BF16, with HF tensor names, so transformers' from_pretrained loads the directory.
template <typename T>
void model_save_hf(const CpuModel<T>& model, const std::string& dir, DType dtype, size_t max_shard_bytes = 0);

// Weights ~ N(0, stddev), RMSNorm weights 1 (HF's initialisation), from `seed`; for tests and benchmarks.
template <typename T>
void model_init_random(CpuModel<T>& model, uint64_t seed, float stddev = 0.02f);

}  // namespace stapo
