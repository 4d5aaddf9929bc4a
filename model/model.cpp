// Llama / Mistral decoder, forward and backward on the CPU, composed from model/ops/ (see model.h).
// Per layer:  n1 = rmsnorm(x);  q,k,v = n1·Wᵀ;  rope(q, k);  x2 = x + attention(q,k,v)·Woᵀ;
//             n2 = rmsnorm(x2);  x' = x2 + (silu(n2·Wgᵀ) · n2·Wuᵀ)·Wdᵀ
// then  h = rmsnorm(x_L)  and the fused lm_head gives log-prob and entropy per position.
#include "model/model.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "common/error.h"
#include "common/file_io.h"
#include "model/ops/attention.h"
#include "model/ops/embedding.h"
#include "model/ops/lm_head.h"
#include "model/ops/matmul.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"

namespace stapo {

template <typename T>
CpuModel<T>::CpuModel(const ModelConfig& config) : config_(config) {
  config_validate(config_, "model config");
  const std::vector<ParamSpec> specs = model_param_specs(config);
  size_t total = 0;
  const std::vector<size_t> offsets = param_offsets(specs, 1, &total);
  // The weights must fit in memory: say so with the sizes rather than fail in the allocator.
  const double bytes = double(total) * sizeof(T), memory = double(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  STAPO_CHECK(bytes <= memory, "the model of this config (", config.num_hidden_layers, " layers, hidden_size ",
              config.hidden_size, ", intermediate_size ", config.intermediate_size, ", vocab_size ", config.vocab_size,
              ") has ", total, " parameters: ", bytes / 1e9, " GB of weights, more than this machine's ",
              memory / 1e9, " GB; check config.json");
  param_buffer_.assign(total, (T)0);
  grad_buffer_.reset(static_cast<T*>(std::calloc(total, sizeof(T))));
  STAPO_CHECK(grad_buffer_ != nullptr, "out of memory: ", total, " gradients of ", sizeof(T), " bytes");
  for (size_t i = 0; i < specs.size(); ++i) {
    Parameter<T> p;
    p.name = specs[i].name;
    p.shape = specs[i].shape;
    p.numel = specs[i].numel;
    p.data = param_buffer_.data() + offsets[i];
    p.grad = grad_buffer_.get() + offsets[i];
    p.is_norm = specs[i].is_norm();
    params_.push_back(p);
  }
  const ParamPointers<T> weights = param_pointers(config, specs, offsets, param_buffer_.data());
  const ParamPointers<T> grads = param_pointers(config, specs, offsets, grad_buffer_.get());
  w_layers_ = weights.layers;
  w_ = weights.globals;
  g_layers_ = grads.layers;
  g_ = grads.globals;
  inv_freq_ = rope_inv_freq<T>(config.head_dim, config.rope_theta, config.rope_scaling);
}

template <typename T>
Parameter<T>& CpuModel<T>::parameter(const std::string& name) {
  for (Parameter<T>& p : params_)
    if (p.name == name) return p;
  fail("the model has no parameter named ", name);
}

template <typename T>
void CpuModel<T>::zero_grad() {
  std::fill(grad_buffer_.get(), grad_buffer_.get() + param_buffer_.size(), (T)0);
}

template <typename T>
void CpuModel<T>::resize_activations(int N) {
  const size_t C = config_.hidden_size, F = config_.intermediate_size, H = config_.num_attention_heads;
  const size_t HD = H * config_.head_dim, KD = (size_t)config_.num_key_value_heads * config_.head_dim;
  acts_.resize(config_.num_hidden_layers);
  for (LayerActivations& a : acts_) {
    for (std::vector<T>* v : {&a.resid, &a.norm1, &a.resid2, &a.norm2}) v->resize(N * C);
    for (std::vector<T>* v : {&a.rstd1, &a.rstd2}) v->resize(N);
    for (std::vector<T>* v : {&a.q, &a.att}) v->resize(N * HD);
    for (std::vector<T>* v : {&a.k, &a.v}) v->resize(N * KD);
    for (std::vector<T>* v : {&a.gate, &a.up, &a.act}) v->resize(N * F);
    a.lse.resize(N * H);
  }
  final_resid_.resize(N * C);
  final_norm_out_.resize(N * C);
  final_rstd_.resize(N);
}

template <typename T>
void CpuModel<T>::run_forward(const TokenBatch& batch) {
  const ModelConfig& c = config_;
  token_batch_validate(batch, c.vocab_size);
  batch_ = batch;
  const int N = batch.rows * batch.T, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = (float)c.rms_norm_eps;
  const AttentionShape shape{batch.rows, batch.T, H, Hkv, D, c.sliding_window};
  resize_activations(N);

  embedding_forward(acts_[0].resid.data(), batch.tokens.data(), w_.embed, N, C);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& w = w_layers_[l];
    LayerActivations& a = acts_[l];
    rmsnorm_forward(a.norm1.data(), a.rstd1.data(), a.resid.data(), w.input_norm, N, C, eps);
    matmul_cpu(a.q.data(), a.norm1.data(), w.wq, N, H * D, C, false, true, 0.0f);
    matmul_cpu(a.k.data(), a.norm1.data(), w.wk, N, Hkv * D, C, false, true, 0.0f);
    matmul_cpu(a.v.data(), a.norm1.data(), w.wv, N, Hkv * D, C, false, true, 0.0f);
    rope_forward(a.q.data(), batch.positions.data(), inv_freq_.data(), N, H, D);
    rope_forward(a.k.data(), batch.positions.data(), inv_freq_.data(), N, Hkv, D);
    attention_forward(a.att.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), shape, batch.segments.data());
    a.resid2 = a.resid;
    matmul_cpu(a.resid2.data(), a.att.data(), w.wo, N, C, H * D, false, true, 1.0f);
    rmsnorm_forward(a.norm2.data(), a.rstd2.data(), a.resid2.data(), w.post_norm, N, C, eps);
    matmul_cpu(a.gate.data(), a.norm2.data(), w.w_gate, N, F, C, false, true, 0.0f);
    matmul_cpu(a.up.data(), a.norm2.data(), w.w_up, N, F, C, false, true, 0.0f);
    swiglu_forward(a.act.data(), a.gate.data(), a.up.data(), N, F);
    std::vector<T>& out = l + 1 < c.num_hidden_layers ? acts_[l + 1].resid : final_resid_;
    out = a.resid2;
    matmul_cpu(out.data(), a.act.data(), w.w_down, N, C, F, false, true, 1.0f);
  }
  rmsnorm_forward(final_norm_out_.data(), final_rstd_.data(), final_resid_.data(), w_.final_norm, N, C, eps);
}

template <typename T>
void CpuModel<T>::forward(const TokenBatch& batch, T* logp, T* entropy) {
  run_forward(batch);
  lm_head_forward(logp, entropy, final_norm_out_.data(), w_.lm_head, batch.targets.data(), batch.rows * batch.T,
                  config_.hidden_size, config_.vocab_size);
}

template <typename T>
std::vector<T> CpuModel<T>::logits(const TokenBatch& batch) {
  run_forward(batch);
  const int N = batch.rows * batch.T;
  std::vector<T> out((size_t)N * config_.vocab_size);
  matmul_cpu(out.data(), final_norm_out_.data(), w_.lm_head, N, config_.vocab_size, config_.hidden_size, false,
             true, 0.0f);
  return out;
}

template <typename T>
void CpuModel<T>::backward(const T* dlogp) {
  const ModelConfig& c = config_;
  STAPO_CHECK(!acts_.empty() && !final_norm_out_.empty(), "CpuModel::backward called before forward");
  const TokenBatch& batch = batch_;
  const int N = batch.rows * batch.T, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const AttentionShape shape{batch.rows, batch.T, H, Hkv, D, c.sliding_window};
  d_resid_.assign((size_t)N * C, (T)0);
  d_norm_.resize((size_t)N * C);
  d_att_.resize((size_t)N * H * D);
  d_q_.resize((size_t)N * H * D);
  d_k_.resize((size_t)N * Hkv * D);
  d_v_.resize((size_t)N * Hkv * D);
  for (std::vector<T>* v : {&d_act_, &d_gate_, &d_up_}) v->resize((size_t)N * F);

  lm_head_backward(d_norm_.data(), g_.lm_head, dlogp, final_norm_out_.data(), w_.lm_head, batch.targets.data(), N, C,
                   c.vocab_size);
  rmsnorm_backward(d_resid_.data(), g_.final_norm, d_norm_.data(), final_resid_.data(), w_.final_norm,
                   final_rstd_.data(), N, C);
  // d_resid_ holds the gradient of the residual stream; each block adds its branch's contribution.
  for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
    const Layer& w = w_layers_[l];
    const Layer& g = g_layers_[l];
    const LayerActivations& a = acts_[l];
    // MLP branch: x' = x2 + act·Wdᵀ.
    matmul_cpu(d_act_.data(), d_resid_.data(), w.w_down, N, F, C, false, false, 0.0f);
    matmul_cpu(g.w_down, d_resid_.data(), a.act.data(), C, F, N, true, false, 1.0f);
    swiglu_backward(d_gate_.data(), d_up_.data(), d_act_.data(), a.gate.data(), a.up.data(), N, F);
    matmul_cpu(d_norm_.data(), d_gate_.data(), w.w_gate, N, C, F, false, false, 0.0f);
    matmul_cpu(d_norm_.data(), d_up_.data(), w.w_up, N, C, F, false, false, 1.0f);
    matmul_cpu(g.w_gate, d_gate_.data(), a.norm2.data(), F, C, N, true, false, 1.0f);
    matmul_cpu(g.w_up, d_up_.data(), a.norm2.data(), F, C, N, true, false, 1.0f);
    rmsnorm_backward(d_resid_.data(), g.post_norm, d_norm_.data(), a.resid2.data(), w.post_norm, a.rstd2.data(), N,
                     C);
    // Attention branch: x2 = x + att·Woᵀ.
    matmul_cpu(d_att_.data(), d_resid_.data(), w.wo, N, H * D, C, false, false, 0.0f);
    matmul_cpu(g.wo, d_resid_.data(), a.att.data(), C, H * D, N, true, false, 1.0f);
    attention_backward(d_q_.data(), d_k_.data(), d_v_.data(), d_att_.data(), a.att.data(), a.lse.data(), a.q.data(),
                       a.k.data(), a.v.data(), shape, batch.segments.data());
    rope_backward(d_q_.data(), batch.positions.data(), inv_freq_.data(), N, H, D);
    rope_backward(d_k_.data(), batch.positions.data(), inv_freq_.data(), N, Hkv, D);
    matmul_cpu(d_norm_.data(), d_q_.data(), w.wq, N, C, H * D, false, false, 0.0f);
    matmul_cpu(d_norm_.data(), d_k_.data(), w.wk, N, C, Hkv * D, false, false, 1.0f);
    matmul_cpu(d_norm_.data(), d_v_.data(), w.wv, N, C, Hkv * D, false, false, 1.0f);
    matmul_cpu(g.wq, d_q_.data(), a.norm1.data(), H * D, C, N, true, false, 1.0f);
    matmul_cpu(g.wk, d_k_.data(), a.norm1.data(), Hkv * D, C, N, true, false, 1.0f);
    matmul_cpu(g.wv, d_v_.data(), a.norm1.data(), Hkv * D, C, N, true, false, 1.0f);
    rmsnorm_backward(d_resid_.data(), g.input_norm, d_norm_.data(), a.resid.data(), w.input_norm, a.rstd1.data(), N,
                     C);
  }
  embedding_backward(g_.embed, d_resid_.data(), batch.tokens.data(), N, C);
}

template <typename T>
void model_load_weights(CpuModel<T>& model, const SafetensorsReader& reader, const std::string& where) {
  const auto& tensors = reader.tensors();
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<std::string> unexpected;
  const bool tied = model.config().tie_word_embeddings;
  for (const auto& [name, t] : tensors) {
    // Some tied checkpoints also store lm_head.weight; accepted only as an exact copy of the embedding.
    if (tied && name == "lm_head.weight" && tensors.count("model.embed_tokens.weight")) {
      const TensorView& e = tensors.at("model.embed_tokens.weight");
      if (!(t.dtype == e.dtype && t.shape == e.shape && std::memcmp(t.data, e.data, t.numel * dtype_size(t.dtype)) == 0))
        unexpected.push_back(name + " (tie_word_embeddings is true but it differs from model.embed_tokens.weight)");
      continue;
    }
    shapes[name] = t.shape;
  }
  model_check_tensors(model.config(), shapes, unexpected, where);
  for (Parameter<T>& p : model.parameters()) tensor_convert(p.data, tensors.at(p.name));
}

template <typename T>
std::unique_ptr<CpuModel<T>> model_load_hf(const std::string& dir) {
  ModelConfig config = config_load(dir + "/config.json");
  auto model = std::make_unique<CpuModel<T>>(config);
  SafetensorsReader reader(dir);
  model_load_weights(*model, reader, dir);
  return model;
}

template <typename T>
void model_save_hf(const CpuModel<T>& model, const std::string& dir, DType dtype, size_t max_shard_bytes) {
  make_directories(dir);
  std::vector<TensorToWrite<T>> tensors;
  for (const Parameter<T>& p : model.parameters()) tensors.push_back({p.name, p.shape, p.data});
  safetensors_write(dir, tensors, dtype, max_shard_bytes);
  write_file_atomic(dir + "/config.json",
                    config_to_json(model.config(), dtype == DType::BF16   ? "bfloat16"
                                                   : dtype == DType::F64 ? "float64"
                                                                         : "float32"));
}

template <typename T>
void model_init_random(CpuModel<T>& model, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, stddev);
  for (Parameter<T>& p : model.parameters())
    for (size_t i = 0; i < p.numel; ++i) p.data[i] = p.is_norm ? (T)1 : (T)normal(rng);
}

template class CpuModel<float>;
template class CpuModel<double>;
template std::unique_ptr<CpuModel<float>> model_load_hf<float>(const std::string&);
template std::unique_ptr<CpuModel<double>> model_load_hf<double>(const std::string&);
template void model_load_weights<float>(CpuModel<float>&, const SafetensorsReader&, const std::string&);
template void model_load_weights<double>(CpuModel<double>&, const SafetensorsReader&, const std::string&);
template void model_save_hf<float>(const CpuModel<float>&, const std::string&, DType, size_t);
template void model_save_hf<double>(const CpuModel<double>&, const std::string&, DType, size_t);
template void model_init_random<float>(CpuModel<float>&, uint64_t, float);
template void model_init_random<double>(CpuModel<double>&, uint64_t, float);

}  // namespace stapo
