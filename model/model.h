// The fp32 CPU reference model: Llama / Mistral forward and backward exactly as HF's LlamaForCausalLM /
// MistralForCausalLM, composed from the ops in model/ops/. T = float (the CPU trainer) or double (finite-
// difference gradient checks). Parameters and their gradients each live in one contiguous buffer, in the
// order of parameters(); activations of the last forward are kept for backward (sizes in docs/model.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/batch.h"   // defines: TokenBatch
#include "model/config.h"  // defines: ModelConfig

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
  T* grad_data() { return grad_buffer_.data(); }
  size_t num_params() const { return param_buffer_.size(); }

  // Per position of batch (rows·T): log-prob of targets[i] and entropy of the next-token distribution,
  // both 0 where targets[i] < 0. Keeps the activations backward needs.
  void forward(const TokenBatch& batch, T* logp, T* entropy);
  // Accumulates (+=) into every parameter's gradient the gradient of Σ_i dlogp[i]·logp[i] for the batch of
  // the last forward.
  void backward(const T* dlogp);
  void zero_grad();
  // Full logits (rows·T, V) of a batch, for tests and scoring; keeps no activations.
  std::vector<T> logits(const TokenBatch& batch);

 private:
  // Pointers into param_buffer_ (or grad_buffer_) for one decoder layer.
  struct Layer {
    T* input_norm;  // (C)
    T* wq;          // (H·D, C)
    T* wk;          // (Hkv·D, C)
    T* wv;          // (Hkv·D, C)
    T* wo;          // (C, H·D)
    T* post_norm;   // (C)
    T* w_gate;      // (F, C)
    T* w_up;        // (F, C)
    T* w_down;      // (C, F)
  };
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

  Layer layer_weights(int l, T* buffer) const;  // buffer: param_buffer_ or grad_buffer_
  void ensure_activations(int N);
  void run_forward(const TokenBatch& batch);  // fills the activations up to final_norm_

  ModelConfig config_;
  std::vector<T> param_buffer_;
  std::vector<T> grad_buffer_;
  std::vector<Parameter<T>> params_;
  std::vector<size_t> layer_offsets_;  // offset of each layer's first tensor in the buffers
  size_t embed_offset_ = 0, final_norm_offset_ = 0, lm_head_offset_ = 0;  // lm_head = embed when tied
  std::vector<T> inv_freq_;  // (D/2)

  // The last forward's batch and activations.
  TokenBatch batch_;
  std::vector<LayerActivations> acts_;
  std::vector<T> final_resid_;  // (N, C)
  std::vector<T> final_rstd_;   // (N)
  std::vector<T> final_norm_;   // (N, C)
};

// Loads config.json + safetensors (single or sharded) from an HF directory, validating every tensor.
template <typename T>
void model_load_hf(CpuModel<T>& model, const std::string& dir);
// Writes config.json + model.safetensors (or shards + index) that transformers loads.
template <typename T>
void model_save_hf(const CpuModel<T>& model, const std::string& dir, bool bf16, size_t max_shard_bytes = 0);

}  // namespace stapo
