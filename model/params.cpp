// The parameter description (model/params.h).
#include "model/params.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error.h"

namespace stapo {

std::vector<ParamSpec> model_param_specs(const ModelConfig& config) {
  const int64_t C = config.hidden_size, F = config.intermediate_size, V = config.vocab_size;
  const int64_t HD = (int64_t)config.num_attention_heads * config.head_dim;
  const int64_t KD = (int64_t)config.num_key_value_heads * config.head_dim;
  std::vector<ParamSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape, ParamRole role, int layer) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= (size_t)d;
    specs.push_back({std::move(name), std::move(shape), numel, role, layer});
  };
  add("model.embed_tokens.weight", {V, C}, ParamRole::embed, -1);
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = cat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {C}, ParamRole::input_norm, l);
    add(p + "self_attn.q_proj.weight", {HD, C}, ParamRole::q_proj, l);
    add(p + "self_attn.k_proj.weight", {KD, C}, ParamRole::k_proj, l);
    add(p + "self_attn.v_proj.weight", {KD, C}, ParamRole::v_proj, l);
    add(p + "self_attn.o_proj.weight", {C, HD}, ParamRole::o_proj, l);
    add(p + "post_attention_layernorm.weight", {C}, ParamRole::post_norm, l);
    add(p + "mlp.gate_proj.weight", {F, C}, ParamRole::gate_proj, l);
    add(p + "mlp.up_proj.weight", {F, C}, ParamRole::up_proj, l);
    add(p + "mlp.down_proj.weight", {C, F}, ParamRole::down_proj, l);
  }
  add("model.norm.weight", {C}, ParamRole::final_norm, -1);
  if (!config.tie_word_embeddings) add("lm_head.weight", {V, C}, ParamRole::lm_head, -1);
  return specs;
}

std::vector<size_t> param_offsets(const std::vector<ParamSpec>& specs, size_t align, size_t* total) {
  STAPO_CHECK(align > 0, "param_offsets: align must be positive");
  auto round_up = [&](size_t n) { return (n + align - 1) / align * align; };
  std::vector<size_t> offsets;
  size_t end = 0;
  for (const ParamSpec& s : specs) {
    offsets.push_back(round_up(end));
    end = offsets.back() + s.numel;
  }
  if (total) *total = round_up(end);
  return offsets;
}

PackedRange param_packed_range(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets, size_t begin,
                               size_t end) {
  // Elements of tensor i before buffer position x: clamp(x − offsets[i], 0, numel).
  auto before = [&](size_t i, size_t x) { return x <= offsets[i] ? 0 : std::min(x - offsets[i], specs[i].numel); };
  PackedRange out;
  for (size_t i = 0; i < specs.size(); ++i) {
    out.first += before(i, begin);
    out.last += before(i, end);
  }
  return out;
}

void param_drop_padding(const std::vector<ParamSpec>& specs, const std::vector<size_t>& offsets,
                        std::vector<float>& buffer) {
  size_t at = 0;
  for (size_t i = 0; i < specs.size(); ++i) {  // tensors only move towards the front
    STAPO_CHECK(offsets[i] + specs[i].numel <= buffer.size(), "param_drop_padding: tensor ", specs[i].name,
                " ends past the buffer's ", buffer.size(), " elements");
    std::memmove(buffer.data() + at, buffer.data() + offsets[i], specs[i].numel * sizeof(float));
    at += specs[i].numel;
  }
  buffer.resize(at);
}

static std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += cat(i ? ", " : "", shape[i]);
  return s + ")";
}

void model_check_tensors(const ModelConfig& config, const std::map<std::string, std::vector<int64_t>>& shapes,
                         std::vector<std::string> unexpected, const std::string& where) {
  std::vector<std::string> missing, misshaped;
  std::set<std::string> known;
  for (const ParamSpec& p : model_param_specs(config)) {
    known.insert(p.name);
    auto it = shapes.find(p.name);
    if (it == shapes.end())
      missing.push_back(p.name);
    else if (it->second != p.shape)
      misshaped.push_back(cat(p.name, " is ", shape_str(it->second), ", expected ", shape_str(p.shape)));
  }
  for (const auto& [name, shape] : shapes)
    if (!known.count(name)) unexpected.push_back(name);
  if (missing.empty() && misshaped.empty() && unexpected.empty()) return;
  std::string msg = cat(where, ": the checkpoint does not match its config (", config.model_type, ", ",
                        config.num_hidden_layers, " layers)");
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    msg += cat("\n  ", names.size(), " ", what, ":");
    for (const std::string& n : names) msg += "\n    " + n;
  };
  list("missing", missing);
  list("mis-shaped", misshaped);
  list("unexpected", unexpected);
  fail(msg);
}

}  // namespace stapo
