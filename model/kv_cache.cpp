// KV-cached single-token decoding through the CpuModel's weights (see kv_cache.h).
#include "model/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "model/ops/embedding.h"
#include "model/ops/matmul.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"

namespace stapo {

template <typename T>
void attention_decode(T* out, const T* q, const T* k, const T* v, int first, int last, int H, int Hkv, int D) {
  const int group = H / Hkv;
  const T scale = (T)(1.0 / std::sqrt((double)D));
  std::vector<T> score(last - first + 1);
  for (int h = 0; h < H; ++h) {
    const T* qh = q + (size_t)h * D;
    const int kv_head = h / group;
    T max_score = -std::numeric_limits<T>::infinity();
    for (int j = first; j <= last; ++j) {
      const T* kj = k + ((size_t)j * Hkv + kv_head) * D;
      T s = 0;
      for (int d = 0; d < D; ++d) s += qh[d] * kj[d];
      score[j - first] = s * scale;
      max_score = std::max(max_score, score[j - first]);
    }
    T sum = 0;
    for (T& s : score) sum += (s = std::exp(s - max_score));
    T* o = out + (size_t)h * D;
    std::fill(o, o + D, (T)0);
    for (int j = first; j <= last; ++j) {
      const T p = score[j - first] / sum;
      const T* vj = v + ((size_t)j * Hkv + kv_head) * D;
      for (int d = 0; d < D; ++d) o[d] += p * vj[d];
    }
  }
}

template <typename T>
KvDecoder<T>::KvDecoder(const CpuModel<T>& model, int max_positions)
    : config_(model.config()), max_positions_(max_positions) {
  STAPO_CHECK(max_positions > 0, "KvDecoder: max_positions must be positive, got ", max_positions);
  auto weight = [&](const std::string& name) -> const T* {
    for (const Parameter<T>& p : model.parameters())
      if (p.name == name) return p.data;
    fail("KvDecoder: the model has no parameter ", name);
  };
  const ModelConfig& c = config_;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    std::string p = cat("model.layers.", l, ".");
    layers_.push_back({weight(p + "input_layernorm.weight"), weight(p + "self_attn.q_proj.weight"),
                       weight(p + "self_attn.k_proj.weight"), weight(p + "self_attn.v_proj.weight"),
                       weight(p + "self_attn.o_proj.weight"), weight(p + "post_attention_layernorm.weight"),
                       weight(p + "mlp.gate_proj.weight"), weight(p + "mlp.up_proj.weight"),
                       weight(p + "mlp.down_proj.weight")});
  }
  embed_ = weight("model.embed_tokens.weight");
  final_norm_ = weight("model.norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_ : weight("lm_head.weight");
  inv_freq_ = rope_inv_freq<T>(c.head_dim, c.rope_theta, c.rope_scaling);
  const size_t kv = (size_t)max_positions * c.num_key_value_heads * c.head_dim;
  k_cache_.assign(c.num_hidden_layers, std::vector<T>(kv));
  v_cache_.assign(c.num_hidden_layers, std::vector<T>(kv));
  x_.resize(c.hidden_size);
  norm_.resize(c.hidden_size);
  q_.resize((size_t)c.num_attention_heads * c.head_dim);
  att_.resize(q_.size());
  for (std::vector<T>* s : {&gate_, &up_, &act_}) s->resize(c.intermediate_size);
  logits_.resize(c.vocab_size);
}

template <typename T>
const std::vector<T>& KvDecoder<T>::step(int32_t token) {
  const ModelConfig& c = config_;
  STAPO_CHECK(token >= 0 && token < c.vocab_size, "KvDecoder: token ", token, " is outside the vocabulary (",
              c.vocab_size, ")");
  STAPO_CHECK(position_ < max_positions_, "KvDecoder: the cache holds ", max_positions_,
              " positions and is full; raise max_positions");
  const int C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = (float)c.rms_norm_eps;
  const int32_t pos = position_;
  const int first = c.sliding_window > 0 ? std::max(0, pos - c.sliding_window + 1) : 0;
  T rstd;
  embedding_forward(x_.data(), &token, embed_, 1, C);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = layers_[l];
    T* k = k_cache_[l].data() + (size_t)pos * Hkv * D;
    T* v = v_cache_[l].data() + (size_t)pos * Hkv * D;
    rmsnorm_forward(norm_.data(), &rstd, x_.data(), w.input_norm, 1, C, eps);
    matmul_cpu(q_.data(), norm_.data(), w.wq, 1, H * D, C, false, true, 0.0f);
    matmul_cpu(k, norm_.data(), w.wk, 1, Hkv * D, C, false, true, 0.0f);
    matmul_cpu(v, norm_.data(), w.wv, 1, Hkv * D, C, false, true, 0.0f);
    rope_forward(q_.data(), &pos, inv_freq_.data(), 1, H, D);
    rope_forward(k, &pos, inv_freq_.data(), 1, Hkv, D);
    attention_decode(att_.data(), q_.data(), k_cache_[l].data(), v_cache_[l].data(), first, pos, H, Hkv, D);
    matmul_cpu(x_.data(), att_.data(), w.wo, 1, C, H * D, false, true, 1.0f);
    rmsnorm_forward(norm_.data(), &rstd, x_.data(), w.post_norm, 1, C, eps);
    matmul_cpu(gate_.data(), norm_.data(), w.w_gate, 1, F, C, false, true, 0.0f);
    matmul_cpu(up_.data(), norm_.data(), w.w_up, 1, F, C, false, true, 0.0f);
    swiglu_forward(act_.data(), gate_.data(), up_.data(), 1, F);
    matmul_cpu(x_.data(), act_.data(), w.w_down, 1, C, F, false, true, 1.0f);
  }
  rmsnorm_forward(norm_.data(), &rstd, x_.data(), final_norm_, 1, C, eps);
  matmul_cpu(logits_.data(), norm_.data(), lm_head_, 1, c.vocab_size, C, false, true, 0.0f);
  ++position_;
  return logits_;
}

template void attention_decode<float>(float*, const float*, const float*, const float*, int, int, int, int, int);
template void attention_decode<double>(double*, const double*, const double*, const double*, int, int, int, int,
                                       int);
template class KvDecoder<float>;
template class KvDecoder<double>;

}  // namespace stapo
