// AdamW moments on disk (train/optimizer_state.h).
#include "train/optimizer_state.h"

#include <cstring>

#include "common/error.h"
#include "common/file_io.h"

namespace stapo {

namespace {
constexpr char kMagic[8] = {'S', 'T', 'A', 'P', 'O', 'A', 'D', 'M'};
constexpr uint32_t kVersion = 1;
}  // namespace

template <typename T>
void optimizer_state_write(const std::string& path, const T* m, const T* v, uint64_t count) {
  std::string bytes(kMagic, 8);
  const uint32_t header[2] = {kVersion, uint32_t(sizeof(T))};
  bytes.append(reinterpret_cast<const char*>(header), sizeof(header));
  bytes.append(reinterpret_cast<const char*>(&count), sizeof(count));
  bytes.append(reinterpret_cast<const char*>(m), count * sizeof(T));
  bytes.append(reinterpret_cast<const char*>(v), count * sizeof(T));
  write_file_atomic(path, bytes);
}

template <typename T>
void optimizer_state_read(const std::string& path, T* m, T* v, uint64_t count) {
  File f(path, "rb");
  char magic[8];
  uint32_t header[2];
  uint64_t stored = 0;
  f.read(magic, 8);
  STAPO_CHECK(std::memcmp(magic, kMagic, 8) == 0, path, ": not a stapo optimizer state file");
  f.read(header, sizeof(header));
  f.read(&stored, sizeof(stored));
  STAPO_CHECK(header[0] == kVersion, path, ": optimizer state version ", header[0], ", this build reads ", kVersion);
  STAPO_CHECK(header[1] == sizeof(T), path, ": optimizer state has ", header[1], "-byte elements, this engine ",
              sizeof(T));
  STAPO_CHECK(stored == count, path, ": optimizer state for ", stored, " parameters, the model has ", count);
  f.read(m, count * sizeof(T));
  f.read(v, count * sizeof(T));
}

template void optimizer_state_write<float>(const std::string&, const float*, const float*, uint64_t);
template void optimizer_state_read<float>(const std::string&, float*, float*, uint64_t);
template void optimizer_state_write<double>(const std::string&, const double*, const double*, uint64_t);
template void optimizer_state_read<double>(const std::string&, double*, double*, uint64_t);

}  // namespace stapo
