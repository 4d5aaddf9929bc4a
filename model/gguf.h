// GGUF (llama.cpp's single-file format, versions 2 and 3) in: the metadata, the tensor table, dequantisation of
// F32/F16/BF16/Q8_0/Q4_0/Q4_1 to fp32, and a Llama/Mistral file as a CpuModel with HF tensor names.
//
// A file is (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata as
// (string key, u32 type, value) with strings as u64 length + bytes and arrays as u32 element type + u64 count +
// elements; per tensor (string name, u32 n_dims, u64 dims[n_dims] fastest first, u32 ggml type, u64 offset);
// padding to `general.alignment` (default 32); then the data, each tensor at its offset from there.
// Quantised blocks hold 32 values of one row: Q8_0 = f16 d, int8 q[32] (x = d·q); Q4_0 = f16 d, 16 bytes of
// nibbles (x = d·(q − 8)); Q4_1 = f16 d, f16 m, 16 bytes (x = d·q + m). Byte j's low nibble is value j, its
// high nibble value j + 16. Every inconsistency is an error naming the file, and the key or the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_io.h"  // defines: MappedFile
#include "model/model.h"     // defines: CpuModel, ModelConfig

namespace stapo {

// ggml's type numbers for the types we read (others are named in errors by gguf_type_name).
enum class GgufType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };
std::string gguf_type_name(uint32_t type);  // "Q4_1", "Q6_K", ... or "type 99"

struct GgufTensor {
  std::string name;           // llama.cpp's name, e.g. "blk.0.attn_q.weight"
  std::vector<int64_t> dims;  // GGUF order, fastest first: a (rows, cols) matrix is {cols, rows}
  uint32_t type = 0;          // a ggml type number (GgufType where supported)
  const uint8_t* data = nullptr;
  size_t numel = 0;
  size_t bytes = 0;  // 0 for an unsupported type (its size is unknown to us)
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }

  bool has(const std::string& key) const { return metadata_.count(key) > 0; }
  // Typed metadata; an absent key or another type is an error naming the key and the file.
  int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;  // any integer or float type
  bool boolean(const std::string& key) const;
  std::string string(const std::string& key) const;
  std::vector<std::string> strings(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;
  // The same with a fallback when the key is absent.
  int64_t integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  double number(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }
  bool boolean(const std::string& key, bool fallback) const { return has(key) ? boolean(key) : fallback; }

 private:
  const nlohmann::json& value(const std::string& key) const;
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  uint32_t version_ = 0;
  std::map<std::string, nlohmann::json> metadata_;  // u64/i64/bool/f64/string or arrays of them
  std::vector<GgufTensor> tensors_;
};

// All numel elements of the tensor as fp32, in storage order; an unsupported type is an error naming it.
// Bit-exact to the `gguf` Python package's dequantize (d·q is exact in fp32; Q4_1's + m rounds once).
void gguf_dequantize(float* dst, const GgufTensor& tensor, const std::string& file);

// The ModelConfig of a GGUF Llama/Mistral file (`general.architecture` "llama" or "mistral"), from its
// `<arch>.*` keys, `tokenizer.ggml.{bos,eos}_token_id` and its tensors (vocabulary = token_embd rows; tied
// when there is no output.weight). Other architectures, mixtures of experts, RoPE scaling and partial
// rotary dimensions are errors naming the key.
ModelConfig gguf_config(const GgufFile& file);

// The model with its weights dequantised to fp32 under HF names, and the row permutation that llama.cpp's
// converter applies to attn_q/attn_k (pairs of rotary halves interleaved per head) undone, as transformers
// does when it loads a GGUF. Missing, mis-shaped and unexpected tensors are reported together by name.
std::unique_ptr<CpuModel<float>> gguf_load_model(const GgufFile& file);

}  // namespace stapo
