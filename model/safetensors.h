// safetensors in and out. A file is: u64 little-endian header length, a JSON header
//   {"<name>": {"dtype": "F32"|"BF16"|"F16"|"F64", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}
// then the raw little-endian data (offsets relative to the end of the header). A sharded checkpoint adds
// model.safetensors.index.json: {"metadata": {"total_size": bytes}, "weight_map": {"<name>": "<file>"}}.
// Files are memory-mapped; every inconsistency (truncated file, bad header, unknown dtype) is an error naming
// the file and the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/file_io.h"  // defines: MappedFile

namespace stapo {

enum class DType { F32, BF16, F16, F64 };  // F64: the double CPU engine's exact checkpoints
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);
float bf16_to_float(uint16_t bits);
float f16_to_float(uint16_t bits);  // IEEE half, subnormals and inf/NaN included

struct TensorView {
  std::string name;
  std::string file;  // the file it lives in, for error messages
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; may be unaligned
  size_t numel = 0;
};

class SafetensorsReader {
 public:
  // `path`: a .safetensors file, or a directory holding model.safetensors or model.safetensors.index.json.
  explicit SafetensorsReader(const std::string& path);
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView& tensor(const std::string& name) const;  // error naming it when absent

 private:
  void add_file(const std::string& file);  // maps and indexes one .safetensors file
  std::vector<std::unique_ptr<MappedFile>> maps_;
  std::map<std::string, TensorView> tensors_;
};

// Converts a tensor's elements to T (float or double).
template <typename T>
void tensor_convert(T* dst, const TensorView& tensor);

template <typename T>
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const T* data = nullptr;
};

// Writes `tensors` as `dtype` (F32, F64 or BF16, bf16 rounded to nearest even) into `dir`: one model.safetensors,
// or, when max_shard_bytes > 0 and the total is larger, model-0000k-of-0000n.safetensors shards plus
// model.safetensors.index.json. Each file is written to a temporary name and renamed when complete.
template <typename T>
void safetensors_write(const std::string& dir, const std::vector<TensorToWrite<T>>& tensors, DType dtype,
                       size_t max_shard_bytes = 0);

}  // namespace stapo
