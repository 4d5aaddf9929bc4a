// GGUF reader, dequantisation and the Llama/Mistral mapping to HF names (model/gguf.h).
// Dequantisation matches numpy's (the gguf package) bit for bit with or without fused multiply-adds: d is an f16
// (11 significant bits) and q at most 8 bits, so d·q is exact in fp32 and Q4_1's d·q + m rounds once either way.
#include "model/gguf.h"

#include <cstring>
#include <set>

#include "common/error.h"
#include "model/safetensors.h"  // defines: f16_to_float, tensor_convert

namespace stapo {

using json = nlohmann::json;

namespace {

constexpr int kBlock = 32;  // values per quantised block (Q8_0, Q4_0, Q4_1)

enum MetaType : uint32_t { U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };

// Bytes per block of 32 values, or 0 where the type has no blocks.
size_t block_bytes(uint32_t type) {
  switch (static_cast<GgufType>(type)) {
    case GgufType::Q8_0: return 2 + 32;
    case GgufType::Q4_0: return 2 + 16;
    case GgufType::Q4_1: return 2 + 2 + 16;
    default: return 0;
  }
}

size_t element_bytes(uint32_t type) {  // unquantised types; 0 otherwise
  switch (static_cast<GgufType>(type)) {
    case GgufType::F32: return 4;
    case GgufType::F16:
    case GgufType::BF16: return 2;
    default: return 0;
  }
}

// Bounds-checked reads from the mapping; errors say where the file ends and what was being read.
struct Cursor {
  const uint8_t* data;
  size_t size, pos = 0;
  const std::string& path;
  std::string what;  // what is being read, for errors

  void need(size_t n) const {
    STAPO_CHECK(n <= size - pos, path, ": truncated at byte ", pos, " of ", size, " while reading ", what);
  }
  template <typename V>
  V read() {
    need(sizeof(V));
    V v;
    std::memcpy(&v, data + pos, sizeof(V));
    pos += sizeof(V);
    return v;
  }
  std::string read_string() {
    const uint64_t n = read<uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
    return s;
  }
  json read_value(uint32_t type, bool in_array = false) {
    switch (type) {
      case U8: return read<uint8_t>();
      case I8: return read<int8_t>();
      case U16: return read<uint16_t>();
      case I16: return read<int16_t>();
      case U32: return read<uint32_t>();
      case I32: return read<int32_t>();
      case F32: return read<float>();
      case BOOL: return read<uint8_t>() != 0;
      case STRING: return read_string();
      case U64: return read<uint64_t>();
      case I64: return read<int64_t>();
      case F64: return read<double>();
      case ARRAY: {
        STAPO_CHECK(!in_array, path, ": ", what, " is an array of arrays, which GGUF readers do not support");
        const uint32_t element = read<uint32_t>();
        const uint64_t n = read<uint64_t>();
        STAPO_CHECK(n <= size - pos, path, ": ", what, " claims ", n, " elements, more than the file holds");
        json a = json::array();
        for (uint64_t i = 0; i < n; ++i) a.push_back(read_value(element, true));
        return a;
      }
    }
    fail(path, ": ", what, " has value type ", type, ", which is not a GGUF metadata type (0..12)");
  }
};

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += cat(i ? ", " : "", dims[i]);
  return s + ")";
}

// llama.cpp's tensor names for one layer, and the HF names they become.
const std::pair<const char*, const char*> kLayerNames[] = {
    {"attn_norm", "input_layernorm"},  {"attn_q", "self_attn.q_proj"},  {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},    {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},     {"ffn_up", "mlp.up_proj"},        {"ffn_down", "mlp.down_proj"}};

// The HF name of a GGUF tensor, or "" when the model has no such tensor.
std::string hf_name(const std::string& name, int layers) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  int layer = -1, consumed = 0;
  if (std::sscanf(name.c_str(), "blk.%d.%n", &layer, &consumed) != 1 || consumed == 0 || layer < 0 ||
      layer >= layers || name.compare(0, consumed, cat("blk.", layer, ".")) != 0)
    return "";
  const std::string rest = name.substr(consumed);
  for (const auto& [gguf, hf] : kLayerNames)
    if (rest == std::string(gguf) + ".weight") return cat("model.layers.", layer, ".", hf, ".weight");
  return "";
}

// Rows of a (heads·D, C) projection from llama.cpp's order back to HF's: within each head, GGUF row 2i + j
// holds HF row j·D/2 + i (the rotary halves were interleaved so that ggml's RoPE rotates adjacent pairs).
void unpermute_rows(float* w, int heads, int D, int64_t cols) {
  std::vector<float> head(size_t(D) * cols);
  for (int h = 0; h < heads; ++h) {
    float* base = w + size_t(h) * D * cols;
    std::memcpy(head.data(), base, head.size() * sizeof(float));
    for (int i = 0; i < D / 2; ++i)
      for (int j = 0; j < 2; ++j)
        std::memcpy(base + size_t(j * D / 2 + i) * cols, head.data() + size_t(2 * i + j) * cols, cols * sizeof(float));
  }
}

// Runs decode(block bytes, its 32 outputs) on every block, blocks in parallel.
template <typename Decode>
void dequantize_blocks(float* dst, const uint8_t* src, size_t blocks, size_t block_bytes, const Decode& decode) {
#pragma omp parallel for
  for (size_t b = 0; b < blocks; ++b) decode(src + b * block_bytes, dst + b * kBlock);
}

}  // namespace

std::string gguf_type_name(uint32_t type) {
  // ggml's names, by type number (gaps are types ggml removed).
  static const char* names[] = {"F32",  "F16",  "Q4_0", "Q4_1", "",     "",     "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                "IQ1_M", "BF16"};
  if (type < sizeof(names) / sizeof(names[0]) && names[type][0]) return names[type];
  return cat("type ", type);
}

GgufFile::GgufFile(const std::string& path) : path_(path), map_(std::make_unique<MappedFile>(path)) {
  Cursor in{map_->data(), map_->size(), 0, path_, "the header"};
  in.need(4);
  STAPO_CHECK(std::memcmp(map_->data(), "GGUF", 4) == 0, path_, ": not a GGUF file (it does not start with \"GGUF\")");
  in.pos = 4;
  version_ = in.read<uint32_t>();
  STAPO_CHECK(version_ == 2 || version_ == 3, path_, ": GGUF version ", version_,
              " is not supported (versions 2 and 3 are; re-convert the model with a current llama.cpp)");
  const uint64_t n_tensors = in.read<uint64_t>(), n_meta = in.read<uint64_t>();
  for (uint64_t i = 0; i < n_meta; ++i) {
    in.what = cat("metadata entry ", i);
    std::string key = in.read_string();
    in.what = cat("metadata key \"", key, "\"");
    const uint32_t type = in.read<uint32_t>();
    json v = in.read_value(type);
    STAPO_CHECK(!metadata_.count(key), path_, ": metadata key \"", key, "\" appears twice");
    metadata_[key] = std::move(v);
  }
  const uint64_t alignment = has("general.alignment") ? uint64_t(integer("general.alignment")) : 32;
  STAPO_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, path_, ": general.alignment ", alignment,
              " is not a power of two");
  std::vector<uint64_t> offsets;
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    in.what = cat("tensor info ", i);
    GgufTensor t;
    t.name = in.read_string();
    in.what = cat("the info of tensor ", t.name);
    const uint32_t n_dims = in.read<uint32_t>();
    STAPO_CHECK(n_dims >= 1 && n_dims <= 4, path_, ": tensor ", t.name, " has ", n_dims, " dimensions (1 to 4 allowed)");
    t.numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = in.read<uint64_t>();
      STAPO_CHECK(dim > 0 && dim < (uint64_t(1) << 40) && t.numel <= (size_t(1) << 48) / dim, path_, ": tensor ",
                  t.name, " has an invalid dimension ", dim);
      t.dims.push_back(int64_t(dim));
      t.numel *= dim;
    }
    t.type = in.read<uint32_t>();
    offsets.push_back(in.read<uint64_t>());
    STAPO_CHECK(names.insert(t.name).second, path_, ": tensor ", t.name, " appears twice");
    STAPO_CHECK(offsets.back() % alignment == 0, path_, ": tensor ", t.name, " starts at offset ", offsets.back(),
                ", not a multiple of the alignment ", alignment);
    if (block_bytes(t.type)) {
      STAPO_CHECK(t.dims[0] % kBlock == 0, path_, ": tensor ", t.name, " is ", gguf_type_name(t.type),
                  " but its rows have ", t.dims[0], " values, not a multiple of the block size 32");
      t.bytes = t.numel / kBlock * block_bytes(t.type);
    } else {
      t.bytes = t.numel * element_bytes(t.type);
    }
    tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (in.pos + alignment - 1) / alignment * alignment;
  STAPO_CHECK(data_start <= map_->size(), path_, ": truncated: the tensor data would start at byte ", data_start,
              " but the file has ", map_->size(), " bytes");
  const uint64_t data_bytes = map_->size() - data_start;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    STAPO_CHECK(offsets[i] <= data_bytes && t.bytes <= data_bytes - offsets[i], path_, ": truncated: tensor ", t.name,
                " (", gguf_type_name(t.type), " ", shape_text(t.dims), ") needs bytes ", offsets[i], "..",
                offsets[i] + t.bytes, " of the data section, which holds ", data_bytes);
    t.data = map_->data() + data_start + offsets[i];
  }
}

const json& GgufFile::value(const std::string& key) const {
  auto it = metadata_.find(key);
  STAPO_CHECK(it != metadata_.end(), path_, ": metadata key \"", key, "\" is missing");
  return it->second;
}

int64_t GgufFile::integer(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX)), path_,
              ": metadata key \"", key, "\" should be an integer but is ", v.type_name());
  return v.get<int64_t>();
}

double GgufFile::number(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_number(), path_, ": metadata key \"", key, "\" should be a number but is ", v.type_name());
  return v.get<double>();
}

bool GgufFile::boolean(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_boolean(), path_, ": metadata key \"", key, "\" should be a boolean but is ", v.type_name());
  return v.get<bool>();
}

std::string GgufFile::string(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_string(), path_, ": metadata key \"", key, "\" should be a string but is ", v.type_name());
  return v.get<std::string>();
}

std::vector<std::string> GgufFile::strings(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_array() && (v.empty() || v[0].is_string()), path_, ": metadata key \"", key,
              "\" should be an array of strings");
  return v.get<std::vector<std::string>>();
}

std::vector<int64_t> GgufFile::integers(const std::string& key) const {
  const json& v = value(key);
  STAPO_CHECK(v.is_array() && (v.empty() || v[0].is_number_integer()), path_, ": metadata key \"", key,
              "\" should be an array of integers");
  return v.get<std::vector<int64_t>>();
}

void gguf_dequantize(float* dst, const GgufTensor& t, const std::string& file) {
  const uint8_t* p = t.data;
  const size_t blocks = t.numel / kBlock, bb = block_bytes(t.type);
  auto half = [](const uint8_t* at) {
    uint16_t h;
    std::memcpy(&h, at, 2);
    return f16_to_float(h);
  };
  switch (static_cast<GgufType>(t.type)) {
    case GgufType::F32:
    case GgufType::F16:
    case GgufType::BF16: {
      TensorView view;
      view.dtype = t.type == uint32_t(GgufType::F32) ? DType::F32 : t.type == uint32_t(GgufType::F16) ? DType::F16
                                                                                                     : DType::BF16;
      view.data = t.data;
      view.numel = t.numel;
      tensor_convert(dst, view);
      return;
    }
    case GgufType::Q8_0:
      dequantize_blocks(dst, p, blocks, bb, [&](const uint8_t* q, float* out) {
        const float d = half(q);
        for (int j = 0; j < kBlock; ++j) out[j] = d * float(int8_t(q[2 + j]));
      });
      return;
    case GgufType::Q4_0:
      dequantize_blocks(dst, p, blocks, bb, [&](const uint8_t* q, float* out) {
        const float d = half(q);
        for (int j = 0; j < kBlock / 2; ++j) {
          out[j] = d * float(int(q[2 + j] & 0x0F) - 8);
          out[j + kBlock / 2] = d * float(int(q[2 + j] >> 4) - 8);
        }
      });
      return;
    case GgufType::Q4_1:
      dequantize_blocks(dst, p, blocks, bb, [&](const uint8_t* q, float* out) {
        const float d = half(q), m = half(q + 2);
        for (int j = 0; j < kBlock / 2; ++j) {
          out[j] = d * float(q[4 + j] & 0x0F) + m;
          out[j + kBlock / 2] = d * float(q[4 + j] >> 4) + m;
        }
      });
      return;
  }
  fail(file, ": tensor ", t.name, " is of type ", gguf_type_name(t.type),
       ", which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1); re-quantise the model to one of "
       "these (e.g. llama.cpp's llama-quantize ... Q8_0) or convert from the original HF checkpoint");
}

ModelConfig gguf_config(const GgufFile& f) {
  const std::string& path = f.path();
  const std::string arch = f.string("general.architecture");
  STAPO_CHECK(arch == "llama" || arch == "mistral", path, ": general.architecture is \"", arch,
              "\"; only \"llama\" and \"mistral\" are supported");
  auto key = [&](const char* name) { return arch + "." + name; };
  STAPO_CHECK(f.integer(key("expert_count"), 0) == 0, path, ": ", key("expert_count"), " is ",
              f.integer(key("expert_count"), 0), ": mixture-of-experts models are not supported");
  if (f.has(key("rope.scaling.type")))
    STAPO_CHECK(f.string(key("rope.scaling.type")) == "none", path, ": ", key("rope.scaling.type"), " is \"",
                f.string(key("rope.scaling.type")), "\"; RoPE scaling from a GGUF is not supported (convert the "
                "original HF checkpoint instead)");
  ModelConfig c;
  c.model_type = arch;
  c.hidden_size = int(f.integer(key("embedding_length")));
  c.intermediate_size = int(f.integer(key("feed_forward_length")));
  c.num_hidden_layers = int(f.integer(key("block_count")));
  c.num_attention_heads = int(f.integer(key("attention.head_count")));
  c.num_key_value_heads = int(f.integer(key("attention.head_count_kv"), c.num_attention_heads));
  STAPO_CHECK(c.num_attention_heads > 0, path, ": ", key("attention.head_count"), " must be positive");
  c.head_dim = int(f.integer(key("attention.key_length"), c.hidden_size / c.num_attention_heads));
  STAPO_CHECK(f.integer(key("attention.value_length"), c.head_dim) == c.head_dim, path, ": ",
              key("attention.value_length"), " differs from the key length ", c.head_dim, "; not supported");
  STAPO_CHECK(f.integer(key("rope.dimension_count"), c.head_dim) == c.head_dim, path, ": ",
              key("rope.dimension_count"), " is ", f.integer(key("rope.dimension_count"), 0), " but the head dim is ",
              c.head_dim, ": partial rotary embeddings are not supported");
  c.rms_norm_eps = f.number(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = f.number(key("rope.freq_base"), 10000.0);
  c.max_position_embeddings = int(f.integer(key("context_length")));
  c.sliding_window = int(f.integer(key("attention.sliding_window"), 0));
  c.tie_word_embeddings = true;
  for (const GgufTensor& t : f.tensors()) {
    if (t.name == "token_embd.weight") {
      STAPO_CHECK(t.dims.size() == 2, path, ": token_embd.weight has ", t.dims.size(), " dimensions, expected 2");
      c.vocab_size = int(t.dims[1]);
    }
    if (t.name == "output.weight") c.tie_word_embeddings = false;
    STAPO_CHECK(t.name != "rope_freqs.weight", path, ": rope_freqs.weight (Llama 3.1-style RoPE scaling factors) ",
                "is not supported: convert the original HF checkpoint, whose config.json states the scaling");
  }
  STAPO_CHECK(c.vocab_size > 0, path, ": no token_embd.weight tensor");
  if (f.has(key("vocab_size")))
    STAPO_CHECK(f.integer(key("vocab_size")) == c.vocab_size, path, ": ", key("vocab_size"), " is ",
                f.integer(key("vocab_size")), " but token_embd.weight has ", c.vocab_size, " rows");
  if (f.has("tokenizer.ggml.bos_token_id")) c.bos_token_ids = {int(f.integer("tokenizer.ggml.bos_token_id"))};
  if (f.has("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {int(f.integer("tokenizer.ggml.eos_token_id"))};
  c.torch_dtype = "float32";
  config_validate(c, path);
  return c;
}

std::unique_ptr<CpuModel<float>> gguf_load_model(const GgufFile& f) {
  const ModelConfig config = gguf_config(f);
  auto model = std::make_unique<CpuModel<float>>(config);
  std::map<std::string, std::vector<int64_t>> shapes;  // HF name → HF shape
  std::map<std::string, const GgufTensor*> by_name;
  std::vector<std::string> unexpected;
  for (const GgufTensor& t : f.tensors()) {
    const std::string name = hf_name(t.name, config.num_hidden_layers);
    if (name.empty()) {
      unexpected.push_back(t.name);
      continue;
    }
    shapes[name] = std::vector<int64_t>(t.dims.rbegin(), t.dims.rend());
    by_name[name] = &t;
  }
  model_check_tensors(model->config(), shapes, unexpected, f.path());
  for (Parameter<float>& p : model->parameters()) {
    gguf_dequantize(p.data, *by_name.at(p.name), f.path());
    const bool q = p.name.find(".self_attn.q_proj.") != std::string::npos;
    if (q || p.name.find(".self_attn.k_proj.") != std::string::npos)
      unpermute_rows(p.data, q ? config.num_attention_heads : config.num_key_value_heads, config.head_dim,
                     p.shape[1]);
  }
  return model;
}

}  // namespace stapo
