// libFuzzer target for the safetensors reader (model/safetensors.h). The first byte picks what the rest is:
// even, a whole .safetensors file (the 8-byte header length, the JSON header, the data), every tensor of it
// then converted to float; odd, a model.safetensors.index.json in a folder whose one shard file is a valid
// tiny checkpoint (weight_map names, paths that leave the folder, missing tensors). Only a stapo::Error may
// stop it. Built and run by dev/fuzz/run.sh.
#include <stdlib.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"          // defines: Error
#include "dev/fuzz/fuzz_file.h"    // defines: fuzz_file
#include "model/safetensors.h"     // defines: SafetensorsReader, tensor_convert, safetensors_write

// A folder holding one valid shard, model-00001-of-00001.safetensors, beside which the index is written.
static const std::string& index_folder() {
  static const std::string dir = [] {
    char name[] = "/tmp/stapo-fuzz-XXXXXX";
    if (!mkdtemp(name)) abort();
    const std::vector<float> a{1, 2, 3, 4}, b{5, 6};
    stapo::safetensors_write<float>(name, {{"a", {2, 2}, a.data()}, {"b", {2}, b.data()}}, stapo::DType::F32);
    if (rename((std::string(name) + "/model.safetensors").c_str(),
               (std::string(name) + "/model-00001-of-00001.safetensors").c_str()) != 0)
      abort();
    return std::string(name);
  }();
  return dir;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    if (data[0] % 2 == 0) {
      const stapo::SafetensorsReader reader(fuzz_file(data + 1, size - 1));
      std::vector<float> values;
      for (const auto& [name, tensor] : reader.tensors()) {
        values.resize(tensor.numel);
        stapo::tensor_convert(values.data(), tensor);
      }
    } else {
      // Plain writes, not write_file_atomic: its fsync would make each input cost milliseconds.
      FILE* index = fopen((index_folder() + "/model.safetensors.index.json").c_str(), "wb");
      if (!index || fwrite(data + 1, 1, size - 1, index) != size - 1 || fclose(index) != 0) abort();
      const stapo::SafetensorsReader reader(index_folder());
    }
  } catch (const stapo::Error&) {
  }
  return 0;
}
