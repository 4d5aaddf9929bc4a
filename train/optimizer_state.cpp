// AdamW moments on disk (train/optimizer_state.h).
#include "train/optimizer_state.h"

#include <cstring>

#include "common/checked.h"
#include "common/checksum.h"
#include "common/error.h"
#include "common/file_io.h"

namespace stapo {

namespace {
constexpr char kMagic[8] = {'S', 'T', 'A', 'P', 'O', 'A', 'D', 'M'};
constexpr uint32_t kVersion = 2;  // 1 had no checksum
constexpr size_t kHeaderBytes = 8 + 2 * sizeof(uint32_t) + sizeof(uint64_t);
}  // namespace

template <typename T>
void optimizer_state_write(const std::string& path, const T* m, const T* v, uint64_t count) {
  write_file_atomic(path, [&](File& f) {
    Checksum sum;
    auto put = [&](const void* data, size_t bytes) {
      f.write(data, bytes);
      sum.update(data, bytes);
    };
    const uint32_t header[2] = {kVersion, uint32_t(sizeof(T))};
    put(kMagic, 8);
    put(header, sizeof(header));
    put(&count, sizeof(count));
    put(m, count * sizeof(T));
    put(v, count * sizeof(T));
    const uint64_t digest = sum.digest();
    f.write(&digest, sizeof(digest));
  });
}

template <typename T>
void optimizer_state_read(const std::string& path, T* m, T* v, uint64_t count, uint64_t begin, uint64_t length) {
  STAPO_CHECK(begin <= count && length <= count - begin, path, ": elements [", begin, ", ", begin + length,
              ") asked of ", count);
  const MappedFile f(path);
  char magic[8];
  uint32_t header[2];
  uint64_t stored = 0;
  STAPO_CHECK(f.size() >= kHeaderBytes, path, ": not a stapo optimizer state file (", f.size(), " bytes)");
  std::memcpy(magic, f.data(), 8);
  std::memcpy(header, f.data() + 8, sizeof(header));
  std::memcpy(&stored, f.data() + 8 + sizeof(header), sizeof(stored));
  STAPO_CHECK(std::memcmp(magic, kMagic, 8) == 0, path, ": not a stapo optimizer state file");
  STAPO_CHECK(header[0] == 1 || header[0] == kVersion, path, ": optimizer state version ", header[0],
              ", this build reads 1 and ", kVersion);
  STAPO_CHECK(header[1] == sizeof(T), path, ": optimizer state has ", header[1], "-byte elements, this engine ",
              sizeof(T));
  STAPO_CHECK(stored == count, path, ": optimizer state for ", stored, " parameters, the model has ", count);
  const uint64_t moment_bytes = checked_mul(count, sizeof(T), path, ": moment size");
  const uint64_t payload = kHeaderBytes + 2 * moment_bytes;
  const uint64_t expected = payload + (header[0] >= 2 ? sizeof(uint64_t) : 0);
  STAPO_CHECK(f.size() == expected, path, " has ", f.size(), " bytes, its header says ", expected,
              " (truncated or corrupt optimizer state)");
  if (header[0] >= 2) {
    uint64_t digest;
    std::memcpy(&digest, f.data() + payload, sizeof(digest));
    const uint64_t actual = checksum(f.data(), payload);
    STAPO_CHECK(actual == digest, path, ": checksum ", checksum_hex(actual), ", the file says ", checksum_hex(digest),
                ": the optimizer state is corrupt; resume from another checkpoint");
  }
  const uint8_t* first = f.data() + kHeaderBytes + begin * sizeof(T);
  std::memcpy(m, first, length * sizeof(T));
  std::memcpy(v, first + moment_bytes, length * sizeof(T));
}

template void optimizer_state_write<float>(const std::string&, const float*, const float*, uint64_t);
template void optimizer_state_read<float>(const std::string&, float*, float*, uint64_t, uint64_t, uint64_t);
template void optimizer_state_write<double>(const std::string&, const double*, const double*, uint64_t);
template void optimizer_state_read<double>(const std::string&, double*, double*, uint64_t, uint64_t, uint64_t);

}  // namespace stapo
