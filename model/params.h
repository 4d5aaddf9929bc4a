// The model's parameters, described once: HF names and shapes in checkpoint order, which tensors are RMSNorm
// weights (no weight decay), and the layer and role of each. The CPU model (model/model.h) lays out its buffers
// from this list, the CUDA model (train/cuda_model.h) its device buffers, and checkpoint loaders check a file's
// tensors against it (model_check_tensors).
// Order: model.embed_tokens.weight; per layer l: input_layernorm, q_proj, k_proj, v_proj, o_proj,
// post_attention_layernorm, gate_proj, up_proj, down_proj; model.norm.weight; lm_head.weight unless tied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"  // defines: ModelConfig

namespace stapo {

enum class ParamRole : int {
  embed,        // (V, C)
  input_norm,   // (C)
  q_proj,       // (H·D, C)
  k_proj,       // (Hkv·D, C)
  v_proj,       // (Hkv·D, C)
  o_proj,       // (C, H·D)
  post_norm,    // (C)
  gate_proj,    // (F, C)
  up_proj,      // (F, C)
  down_proj,    // (C, F)
  final_norm,   // (C)
  lm_head,      // (V, C); absent with tie_word_embeddings (the embedding serves)
};

struct ParamSpec {
  std::string name;            // HF tensor name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // HF shape
  size_t numel = 0;
  ParamRole role = ParamRole::embed;
  int layer = -1;  // decoder layer, -1 for the tensors outside the layers
  bool is_norm() const {
    return role == ParamRole::input_norm || role == ParamRole::post_norm || role == ParamRole::final_norm;
  }
};

std::vector<ParamSpec> model_param_specs(const ModelConfig& config);

// Where each tensor starts in one buffer holding all of them in order, each start rounded up to a multiple of
// `align` elements; *total (when given) is the buffer's size in elements, also a multiple of `align`.
std::vector<size_t> param_offsets(const std::vector<ParamSpec>& specs, size_t align, size_t* total);

// Files hold the tensors back to back without that padding (checkpoints, train/optimizer_state.h). Range
// [begin, end) of a buffer laid out by param_offsets holds the tensor elements [first, last) of that packed order:
// a data-parallel rank's shard of the buffer is one run of the file.
struct PackedRange {
  size_t first = 0, last = 0;
};
PackedRange param_packed_range(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets, size_t begin,
                               size_t end);
// A whole buffer laid out by param_offsets → its tensors back to back (the file's order), in place.
void param_drop_padding(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets,
                        std::vector<float>& buffer);

// Pointers to one decoder layer's tensors (weights or gradients, whatever the buffer holds).
template <typename T>
struct LayerParams {
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

// The tensors outside the layers.
template <typename T>
struct GlobalParams {
  T* embed;       // (V, C)
  T* final_norm;  // (C)
  T* lm_head;     // (V, C); == embed when tied
};

template <typename T>
struct ParamPointers {
  std::vector<LayerParams<T>> layers;
  GlobalParams<T> globals{};
};

// The pointers into a buffer laid out by param_offsets (tensor i at base + offsets[i]).
template <typename T>
ParamPointers<T> param_pointers(const ModelConfig& config, const std::vector<ParamSpec>& specs,
                                const std::vector<size_t>& offsets, T* base) {
  ParamPointers<T> p;
  p.layers.assign(config.num_hidden_layers, LayerParams<T>{});
  for (size_t i = 0; i < specs.size(); ++i) {
    T* at = base + offsets[i];
    const ParamSpec& s = specs[i];
    LayerParams<T>* layer = s.layer >= 0 ? &p.layers[s.layer] : nullptr;
    switch (s.role) {
      case ParamRole::embed: p.globals.embed = at; break;
      case ParamRole::input_norm: layer->input_norm = at; break;
      case ParamRole::q_proj: layer->wq = at; break;
      case ParamRole::k_proj: layer->wk = at; break;
      case ParamRole::v_proj: layer->wv = at; break;
      case ParamRole::o_proj: layer->wo = at; break;
      case ParamRole::post_norm: layer->post_norm = at; break;
      case ParamRole::gate_proj: layer->w_gate = at; break;
      case ParamRole::up_proj: layer->w_up = at; break;
      case ParamRole::down_proj: layer->w_down = at; break;
      case ParamRole::final_norm: p.globals.final_norm = at; break;
      case ParamRole::lm_head: p.globals.lm_head = at; break;
    }
  }
  if (config.tie_word_embeddings) p.globals.lm_head = p.globals.embed;
  return p;
}

// A checkpoint's tensors (HF name → shape) against the config's parameters: one error, naming `where`, that
// lists every missing, mis-shaped and unexpected tensor (`unexpected`: names the caller already found
// unusable). Loaders call it before copying anything.
void model_check_tensors(const ModelConfig& config, const std::map<std::string, std::vector<int64_t>>& shapes,
                         std::vector<std::string> unexpected, const std::string& where);

}  // namespace stapo
