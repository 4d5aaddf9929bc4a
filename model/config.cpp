// config.json ⇄ ModelConfig. Reads both the classic layout (rope_theta + rope_scaling) and transformers 5's
// rope_parameters; writes the classic layout, which every transformers version loads.
#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"

namespace stapo {

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 30;
constexpr double kMaxRopeTheta = 1e15;

// Typed field access whose errors name the field and the file.
struct ConfigReader {
  const json& j;
  const std::string& path;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  template <typename V>
  V get(const json& obj, const std::string& key, const std::string& where) const {
    try {
      return obj.at(key).get<V>();
    } catch (const json::exception&) {
      fail(path, ": field \"", where, "\" is ", obj.contains(key) ? "of the wrong type" : "missing",
           " (expected ", std::is_same_v<V, std::string> ? "a string" : std::is_same_v<V, bool> ? "a boolean"
                                                                                                  : "a number",
           ")");
    }
  }
  template <typename V>
  V required(const char* key) const { return get<V>(j, key, key); }
  template <typename V>
  V optional(const char* key, V fallback) const { return has(key) ? get<V>(j, key, key) : fallback; }

  // An integer field in [lo, hi]: 278.9 or 2^32 + 100 are refused, never read as 278 or 100.
  int integer(const json& obj, const std::string& key, const std::string& where, int64_t lo, int64_t hi) const {
    STAPO_CHECK(obj.contains(key), path, ": field \"", where, "\" is missing (expected an integer)");
    const json& v = obj.at(key);
    // nlohmann keeps non-negative integers as unsigned: compare those as unsigned, so 2^64 - 1 is not -1.
    const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() >= uint64_t(std::max<int64_t>(lo, 0)) &&
                                                       v.get<uint64_t>() <= uint64_t(hi)
                                                 : v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    STAPO_CHECK(in_range, path, ": field \"", where, "\" is ", v.dump(), "; expected an integer in [", lo, ", ", hi,
                "]");
    return static_cast<int>(v.get<int64_t>());
  }
  int integer(const char* key, int64_t lo, int64_t hi) const { return integer(j, key, key, lo, hi); }
  int integer(const char* key, int64_t lo, int64_t hi, int fallback) const {
    return has(key) ? integer(key, lo, hi) : fallback;
  }
  // A finite number in (lo, hi] (lo excluded: the fields that use it must be positive).
  double positive(const json& obj, const std::string& key, const std::string& where, double hi) const {
    const double v = get<double>(obj, key, where);
    STAPO_CHECK(std::isfinite(v) && v > 0 && v <= hi, path, ": field \"", where, "\" is ", obj.at(key).dump(),
                "; expected a number in (0, ", hi, "]");
    return v;
  }

  // A token id field: absent/null, one id, or a list of ids.
  std::vector<int> ids(const char* key) const {
    if (!has(key)) return {};
    const json& v = j.at(key);
    auto id = [&](const json& x) {
      STAPO_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < kMaxVocab, path, ": field \"",
                  key, "\" holds ", x.dump(), "; token ids are integers in [0, ", kMaxVocab, ")");
      return x.get<int>();
    };
    if (!v.is_array()) return {id(v)};
    std::vector<int> out;
    for (const json& x : v) out.push_back(id(x));
    return out;
  }
};

// RoPE: `rope` is the rope_parameters or rope_scaling object, `where` its field name.
void parse_rope(ModelConfig& c, const ConfigReader& r, const json& rope, const std::string& where) {
  STAPO_CHECK(rope.is_object(), r.path, ": field \"", where, "\" must be an object or null");
  // Older configs call the field "type", newer ones "rope_type".
  const std::string type_key = rope.contains("rope_type") ? "rope_type" : "type";
  std::string type = rope.contains(type_key) ? r.get<std::string>(rope, type_key, where + "." + type_key) : "default";
  if (rope.contains("rope_theta")) c.rope_theta = r.positive(rope, "rope_theta", where + ".rope_theta", kMaxRopeTheta);
  if (rope.contains("partial_rotary_factor"))
    STAPO_CHECK(r.get<double>(rope, "partial_rotary_factor", where + ".partial_rotary_factor") == 1.0, r.path,
                ": field \"", where, ".partial_rotary_factor\" is not 1; partial RoPE is not supported");
  if (type == "default") return;
  STAPO_CHECK(type == "llama3", r.path, ": field \"", where, ".", type_key, "\" is \"", type,
              "\"; only \"default\" and \"llama3\" RoPE are supported");
  RopeScaling& s = c.rope_scaling;
  s.llama3 = true;
  s.factor = r.positive(rope, "factor", where + ".factor", 1e6);
  s.low_freq_factor = r.positive(rope, "low_freq_factor", where + ".low_freq_factor", 1e6);
  s.high_freq_factor = r.positive(rope, "high_freq_factor", where + ".high_freq_factor", 1e6);
  s.original_max_position_embeddings = r.integer(rope, "original_max_position_embeddings",
                                                 where + ".original_max_position_embeddings", 1, kMaxPositions);
  STAPO_CHECK(s.high_freq_factor > s.low_freq_factor, r.path, ": field \"", where,
              "\": llama3 scaling needs high_freq_factor > low_freq_factor");
}

}  // namespace

ModelConfig config_parse(const std::string& json_text, const std::string& path) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {  // a parse error, or a number too large for a double (1e400)
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  STAPO_CHECK(j.is_object(), path, ": expected a JSON object");
  ConfigReader r{j, path};
  ModelConfig c;
  c.model_type = r.required<std::string>("model_type");
  STAPO_CHECK(c.model_type == "llama" || c.model_type == "mistral", path, ": field \"model_type\" is \"",
              c.model_type, "\"; only \"llama\" and \"mistral\" are supported");
  // Ranges far beyond any real model, checked before anything is allocated: an absurd size is named here
  // instead of failing later as an allocation error.
  c.vocab_size = r.integer("vocab_size", 1, kMaxVocab);
  c.hidden_size = r.integer("hidden_size", 1, 1 << 17);
  c.intermediate_size = r.integer("intermediate_size", 1, 1 << 20);
  c.num_hidden_layers = r.integer("num_hidden_layers", 1, 1 << 12);
  c.num_attention_heads = r.integer("num_attention_heads", 1, 1 << 12);
  c.num_key_value_heads = r.integer("num_key_value_heads", 1, 1 << 12, c.num_attention_heads);
  c.head_dim = r.integer("head_dim", 1, 1 << 12, c.hidden_size / c.num_attention_heads);
  c.rms_norm_eps = r.has("rms_norm_eps") ? r.positive(j, "rms_norm_eps", "rms_norm_eps", 1.0) : 1e-6;
  c.max_position_embeddings = r.integer("max_position_embeddings", 0, kMaxPositions, 0);
  c.tie_word_embeddings = r.optional<bool>("tie_word_embeddings", false);
  c.bos_token_ids = r.ids("bos_token_id");
  c.eos_token_ids = r.ids("eos_token_id");
  c.torch_dtype = r.optional<std::string>("dtype", r.optional<std::string>("torch_dtype", ""));

  // Features the reference model does not implement: refuse rather than compute something else.
  for (const char* bias : {"attention_bias", "mlp_bias"})
    STAPO_CHECK(!r.optional<bool>(bias, false), path, ": field \"", bias,
                "\" is true; biases in attention/MLP projections are not supported");
  std::string act = r.optional<std::string>("hidden_act", "silu");
  STAPO_CHECK(act == "silu", path, ": field \"hidden_act\" is \"", act, "\"; only \"silu\" (SwiGLU) is supported");
  STAPO_CHECK(r.optional<double>("attention_dropout", 0.0) == 0.0, path,
              ": field \"attention_dropout\" is not 0; attention dropout is not supported");

  c.rope_theta = r.has("rope_theta") ? r.positive(j, "rope_theta", "rope_theta", kMaxRopeTheta) : 10000.0;
  if (r.has("rope_parameters")) parse_rope(c, r, j.at("rope_parameters"), "rope_parameters");
  if (r.has("rope_scaling")) parse_rope(c, r, j.at("rope_scaling"), "rope_scaling");
  if (c.model_type == "mistral") c.sliding_window = r.integer("sliding_window", 0, kMaxPositions, 0);
  config_validate(c, path);
  return c;
}

ModelConfig config_load(const std::string& path) { return config_parse(read_text_file(path), path); }

void config_validate(const ModelConfig& c, const std::string& path) {
  STAPO_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                  c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0,
              path, ": vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, ",
              "num_key_value_heads and head_dim must all be positive");
  STAPO_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, path, ": num_attention_heads (",
              c.num_attention_heads, ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  STAPO_CHECK(c.head_dim % 2 == 0, path, ": head_dim (", c.head_dim, ") must be even for RoPE");
  STAPO_CHECK(c.rms_norm_eps > 0 && c.rms_norm_eps < 1, path, ": rms_norm_eps (", c.rms_norm_eps,
              ") must be in (0, 1)");
  STAPO_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, path, ": rope_theta (", c.rope_theta,
              ") must be positive");
  STAPO_CHECK(c.sliding_window >= 0, path, ": sliding_window must be positive or null");
}

std::string config_to_json(const ModelConfig& c, const std::string& torch_dtype) {
  bool mistral = c.model_type == "mistral";
  json j;
  j["architectures"] = {mistral ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.llama3) {
    const RopeScaling& s = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", s.factor},
                         {"low_freq_factor", s.low_freq_factor},
                         {"high_freq_factor", s.high_freq_factor},
                         {"original_max_position_embeddings", s.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (mistral) {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  } else {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  auto ids = [](const std::vector<int>& v) { return v.empty() ? json(nullptr) : v.size() == 1 ? json(v[0]) : json(v); };
  j["bos_token_id"] = ids(c.bos_token_ids);
  j["eos_token_id"] = ids(c.eos_token_ids);
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace stapo
