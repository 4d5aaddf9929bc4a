// safetensors reader (mmap, F32/BF16/F16/F64 → float/double) and writer (F32, F64 or BF16, single or sharded).
#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "common/checked.h"
#include "common/error.h"

namespace stapo {

using json = nlohmann::json;
namespace fs = std::filesystem;

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F64: return "F64";
  }
  return "?";
}

size_t dtype_size(DType dtype) { return dtype == DType::F64 ? 8 : dtype == DType::F32 ? 4 : 2; }

float bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as torch's .to(torch.bfloat16); NaN stays a (quiet) NaN.
static uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

float f16_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: mant · 2^-24
    float f = (float)mant * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static bool dtype_parse(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::F32;
  else if (s == "BF16") *out = DType::BF16;
  else if (s == "F16") *out = DType::F16;
  else if (s == "F64") *out = DType::F64;
  else return false;
  return true;
}

SafetensorsReader::SafetensorsReader(const std::string& path) {
  if (!fs::is_directory(path)) {
    add_file(path);
    return;
  }
  std::string single = path + "/model.safetensors", index = path + "/model.safetensors.index.json";
  if (fs::exists(single)) {
    add_file(single);
    return;
  }
  STAPO_CHECK(fs::exists(index), path, ": neither model.safetensors nor model.safetensors.index.json found");
  json j;
  try {
    j = json::parse(read_text_file(index));
  } catch (const json::exception& e) {
    fail(index, ": not valid JSON (", e.what(), ")");
  }
  STAPO_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index,
              ": no \"weight_map\" object");
  std::map<std::string, std::string> weight_map;  // tensor → file
  for (auto& [name, file] : j["weight_map"].items()) {
    STAPO_CHECK(file.is_string(), index, ": weight_map entry for tensor ", name, " is not a file name");
    const std::string f = file.get<std::string>();
    // Only a file beside the index: "../x" or "/etc/x" would read outside the model folder.
    STAPO_CHECK(!f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos, index,
                ": weight_map entry for tensor ", name, " names '", f, "'; only a file name inside ", path,
                " is accepted (no folders, no '..')");
    weight_map[name] = f;
  }
  std::set<std::string> files;
  for (auto& [name, file] : weight_map) files.insert(file);
  for (const std::string& file : files) add_file(path + "/" + file);
  for (auto& [name, file] : weight_map) {
    auto it = tensors_.find(name);
    STAPO_CHECK(it != tensors_.end() && it->second.file == path + "/" + file, index, ": tensor ", name,
                " is mapped to ", file, " but that file does not hold it");
  }
  for (auto& [name, tensor] : tensors_)
    STAPO_CHECK(weight_map.count(name), index, ": tensor ", name, " is in ", tensor.file,
                " but not in the weight_map");
}

void SafetensorsReader::add_file(const std::string& file) {
  maps_.push_back(std::make_unique<MappedFile>(file));
  const MappedFile& m = *maps_.back();
  STAPO_CHECK(m.size() >= 8, file, ": truncated (", m.size(), " bytes; a safetensors file starts with an 8-byte",
              " header length)");
  uint64_t header_len;
  std::memcpy(&header_len, m.data(), 8);
  STAPO_CHECK(header_len <= m.size() - 8, file, ": truncated or not a safetensors file (header length ",
              header_len, " but the file has ", m.size(), " bytes)");
  json header;
  try {
    header = json::parse(m.data() + 8, m.data() + 8 + header_len);
  } catch (const json::parse_error& e) {
    fail(file, ": the safetensors header is not valid JSON (", e.what(), ")");
  }
  STAPO_CHECK(header.is_object(), file, ": the safetensors header is not a JSON object");
  const uint8_t* base = m.data() + 8 + header_len;
  const size_t data_bytes = m.size() - 8 - header_len;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    TensorView t;
    t.name = name;
    t.file = file;
    try {
      std::string dtype = info.at("dtype").get<std::string>();
      STAPO_CHECK(dtype_parse(dtype, &t.dtype), file, ": tensor ", name, " has dtype ", dtype,
                  "; supported dtypes are F32, BF16, F16 and F64");
      t.shape = info.at("shape").get<std::vector<int64_t>>();
      auto offsets = info.at("data_offsets").get<std::vector<uint64_t>>();
      STAPO_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1], file, ": tensor ", name,
                  " has invalid data_offsets");
      t.numel = 1;
      const std::string too_large = cat(file, ": tensor ", name, " has shape ", info.at("shape").dump(),
                                        ", too large to exist");
      for (int64_t d : t.shape) {
        STAPO_CHECK(d >= 0, file, ": tensor ", name, " has a negative dimension");
        t.numel = checked_mul(t.numel, uint64_t(d), too_large);
      }
      const uint64_t bytes = checked_mul(t.numel, dtype_size(t.dtype), too_large);
      STAPO_CHECK(offsets[1] - offsets[0] == bytes, file, ": tensor ", name, " spans ", offsets[1] - offsets[0],
                  " bytes but its shape and dtype need ", bytes);
      STAPO_CHECK(offsets[1] <= data_bytes, file, ": truncated: tensor ", name, " ends at byte ", offsets[1],
                  " of the data but the file holds ", data_bytes, " data bytes");
      t.data = base + offsets[0];
    } catch (const json::exception& e) {
      fail(file, ": tensor ", name, " has a malformed header entry (", e.what(), ")");
    }
    STAPO_CHECK(!tensors_.count(name), file, ": tensor ", name, " also appears in ", tensors_[name].file);
    tensors_[name] = std::move(t);
  }
}

const TensorView& SafetensorsReader::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  STAPO_CHECK(it != tensors_.end(), "tensor ", name, " not found in the checkpoint");
  return it->second;
}

template <typename T>
void tensor_convert(T* dst, const TensorView& t) {
  const uint8_t* p = t.data;
  for (size_t i = 0; i < t.numel; ++i) {
    if (t.dtype == DType::F32) {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      dst[i] = (T)f;
    } else if (t.dtype == DType::F64) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      dst[i] = (T)d;
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      dst[i] = (T)(t.dtype == DType::BF16 ? bf16_to_float(h) : f16_to_float(h));
    }
  }
}

// Writes one .safetensors file holding tensors [begin, end).
template <typename T>
static void write_one_file(const std::string& path, const TensorToWrite<T>* begin, const TensorToWrite<T>* end,
                           DType dtype) {
  json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorToWrite<T>* t = begin; t != end; ++t) {
    size_t numel = 1;
    for (int64_t d : t->shape) numel *= (size_t)d;
    header[t->name] = {{"dtype", dtype_name(dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + numel * dtype_size(dtype)}}};
    offset += numel * dtype_size(dtype);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned, as the reference writer does
  uint64_t len = text.size();
  write_file_atomic(path, [&](File& f) {
    f.write(&len, 8);
    f.write(text.data(), text.size());
    // Converted and written in pieces, so a large tensor never needs a second full-size buffer.
    const size_t piece = 1 << 20;
    std::vector<uint8_t> buf(piece * dtype_size(dtype));
    for (const TensorToWrite<T>* t = begin; t != end; ++t) {
      size_t numel = 1;
      for (int64_t d : t->shape) numel *= (size_t)d;
      for (size_t i0 = 0; i0 < numel; i0 += piece) {
        const size_t n = std::min(piece, numel - i0);
        for (size_t i = 0; i < n; ++i) {
          float f32 = (float)t->data[i0 + i];
          if (dtype == DType::F64) {
            const double f64 = (double)t->data[i0 + i];
            std::memcpy(buf.data() + 8 * i, &f64, 8);
          } else if (dtype == DType::BF16) {
            uint16_t h = float_to_bf16(f32);
            std::memcpy(buf.data() + 2 * i, &h, 2);
          } else {
            std::memcpy(buf.data() + 4 * i, &f32, 4);
          }
        }
        f.write(buf.data(), n * dtype_size(dtype));
      }
    }
  });
}

template <typename T>
void safetensors_write(const std::string& dir, const std::vector<TensorToWrite<T>>& tensors, DType dtype,
                       size_t max_shard_bytes) {
  STAPO_CHECK(dtype != DType::F16, dir, ": writing F16 is not supported; use F32 or BF16");
  make_directories(dir);
  // Greedy shards in the given order, each at most max_shard_bytes (a larger tensor gets a shard of its own).
  std::vector<size_t> starts{0};
  size_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    size_t numel = 1;
    for (int64_t d : tensors[i].shape) numel *= (size_t)d;
    size_t bytes = numel * dtype_size(dtype);
    if (max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      starts.push_back(i);
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    total += bytes;
  }
  starts.push_back(tensors.size());
  const size_t n = starts.size() - 1;
  // A previous save of the other layout would shadow this one for a reader: it goes, but only once the new
  // files are complete, so that an error on the way (a full disk) leaves the old weights readable.
  const std::string other_layout = dir + (n == 1 ? "/model.safetensors.index.json" : "/model.safetensors");
  std::error_code ec;
  if (n == 1) {
    write_one_file(dir + "/model.safetensors", tensors.data(), tensors.data() + tensors.size(), dtype);
    fs::remove(other_layout, ec);
    return;
  }
  json weight_map = json::object();
  for (size_t s = 0; s < n; ++s) {
    char name[64];
    snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, n);
    write_one_file(dir + "/" + name, tensors.data() + starts[s], tensors.data() + starts[s + 1], dtype);
    for (size_t i = starts[s]; i < starts[s + 1]; ++i) weight_map[tensors[i].name] = name;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  fs::remove(other_layout, ec);
}

template void tensor_convert<float>(float*, const TensorView&);
template void tensor_convert<double>(double*, const TensorView&);
template void safetensors_write<float>(const std::string&, const std::vector<TensorToWrite<float>>&, DType, size_t);
template void safetensors_write<double>(const std::string&, const std::vector<TensorToWrite<double>>&, DType,
                                        size_t);

}  // namespace stapo
