// AdamW moments on disk (train/optimizer_state.h).
#include "train/optimizer_state.h"

#include <cstring>
#include <initializer_list>

#include "common/checked.h"
#include "common/checksum.h"
#include "common/error.h"
#include "common/file_io.h"
#include "model/ops/adamw.h"

namespace stapo {

namespace {
constexpr char kMagic[8] = {'S', 'T', 'A', 'P', 'O', 'A', 'D', 'M'};
constexpr uint32_t kVersionDense = 2;  // 1 had no checksum
constexpr uint32_t kVersionQ8 = 3;
constexpr size_t kHeaderBytes = 8 + 2 * sizeof(uint32_t) + sizeof(uint64_t);

struct Piece {
  const void* data;
  uint64_t bytes;
};

void state_write(const std::string& path, uint32_t version, uint32_t element_bytes, uint64_t count,
                 std::initializer_list<Piece> pieces) {
  write_file_atomic(path, [&](File& f) {
    Checksum sum;
    auto put = [&](const void* data, size_t bytes) {
      f.write(data, bytes);
      sum.update(data, bytes);
    };
    const uint32_t header[2] = {version, element_bytes};
    put(kMagic, 8);
    put(header, sizeof(header));
    put(&count, sizeof(count));
    for (const Piece& p : pieces) put(p.data, p.bytes);
    const uint64_t digest = sum.digest();
    f.write(&digest, sizeof(digest));
  });
}

// The file's header checked against what the engine holds (`q8`: 8-bit moments, else `element_bytes` each), its
// length against `payload_bytes` after the header, and its checksum; returns the version.
uint32_t state_check(const MappedFile& f, const std::string& path, bool q8, uint32_t element_bytes, uint64_t count,
                     uint64_t payload_bytes) {
  STAPO_CHECK(f.size() >= kHeaderBytes, path, ": not a stapo optimizer state file (", f.size(), " bytes)");
  uint32_t header[2];
  uint64_t stored = 0;
  STAPO_CHECK(std::memcmp(f.data(), kMagic, 8) == 0, path, ": not a stapo optimizer state file");
  std::memcpy(header, f.data() + 8, sizeof(header));
  std::memcpy(&stored, f.data() + 8 + sizeof(header), sizeof(stored));
  const uint32_t version = header[0];
  STAPO_CHECK(version >= 1 && version <= kVersionQ8, path, ": optimizer state version ", version,
              ", this build reads 1 to ", kVersionQ8);
  STAPO_CHECK(q8 || version != kVersionQ8, path,
              " holds 8-bit block-wise AdamW moments: resume with --moments 8bit (this run keeps fp32 moments)");
  STAPO_CHECK(!q8 || version == kVersionQ8, path,
              " holds fp32 AdamW moments: resume with --moments fp32 (this run keeps 8-bit moments)");
  STAPO_CHECK(header[1] == element_bytes, path, ": optimizer state has ", header[1], "-byte elements, this engine ",
              element_bytes);
  STAPO_CHECK(stored == count, path, ": optimizer state for ", stored, " parameters, the model has ", count);
  const uint64_t payload = checked_add(uint64_t(kHeaderBytes), payload_bytes, path, ": state size");
  const uint64_t expected = payload + (version >= 2 ? sizeof(uint64_t) : 0);
  STAPO_CHECK(f.size() == expected, path, " has ", f.size(), " bytes, its header says ", expected,
              " (truncated or corrupt optimizer state)");
  if (version >= 2) {
    uint64_t digest;
    std::memcpy(&digest, f.data() + payload, sizeof(digest));
    const uint64_t actual = checksum(f.data(), payload);
    STAPO_CHECK(actual == digest, path, ": checksum ", checksum_hex(actual), ", the file says ", checksum_hex(digest),
                ": the optimizer state is corrupt; resume from another checkpoint");
  }
  return version;
}

struct Q8Header {
  uint32_t block_size, reserved;
  uint64_t blocks;
};
}  // namespace

template <typename T>
void optimizer_state_write(const std::string& path, const T* m, const T* v, uint64_t count) {
  state_write(path, kVersionDense, sizeof(T), count, {{m, count * sizeof(T)}, {v, count * sizeof(T)}});
}

template <typename T>
void optimizer_state_read(const std::string& path, T* m, T* v, uint64_t count, uint64_t begin, uint64_t length) {
  STAPO_CHECK(begin <= count && length <= count - begin, path, ": elements [", begin, ", ", begin + length,
              ") asked of ", count);
  const MappedFile f(path);
  const uint64_t moment_bytes = checked_mul(count, sizeof(T), path, ": moment size");
  state_check(f, path, false, sizeof(T), count, 2 * moment_bytes);
  const uint8_t* first = f.data() + kHeaderBytes + begin * sizeof(T);
  std::memcpy(m, first, length * sizeof(T));
  std::memcpy(v, first + moment_bytes, length * sizeof(T));
}

void optimizer_state_write_q8(const std::string& path, const uint8_t* m_code, const uint8_t* v_code, uint64_t count,
                              const float* m_absmax, const float* v_absmax, uint64_t blocks) {
  const Q8Header header{uint32_t(kQuantBlock), 0, blocks};
  state_write(path, kVersionQ8, 1, count,
              {{&header, sizeof(header)}, {m_code, count}, {v_code, count}, {m_absmax, blocks * sizeof(float)},
               {v_absmax, blocks * sizeof(float)}});
}

void optimizer_state_read_q8(const std::string& path, uint8_t* m_code, uint8_t* v_code, uint64_t count,
                             float* m_absmax, float* v_absmax, uint64_t blocks) {
  const MappedFile f(path);
  const uint64_t absmax_bytes = checked_mul(blocks, sizeof(float), path, ": absmax size");
  const uint64_t payload = checked_add(checked_mul(count, uint64_t(2), path, ": code size"),
                                       checked_add(sizeof(Q8Header), 2 * absmax_bytes, path, ": state size"), path,
                                       ": state size");
  state_check(f, path, true, 1, count, payload);
  Q8Header header;
  const uint8_t* at = f.data() + kHeaderBytes;
  std::memcpy(&header, at, sizeof(header));
  STAPO_CHECK(header.block_size == uint32_t(kQuantBlock) && header.blocks == blocks, path,
              ": 8-bit moments in ", header.blocks, " blocks of ", header.block_size, ", this model needs ", blocks,
              " blocks of ", kQuantBlock);
  at += sizeof(header);
  std::memcpy(m_code, at, count);
  std::memcpy(v_code, at + count, count);
  std::memcpy(m_absmax, at + 2 * count, absmax_bytes);
  std::memcpy(v_absmax, at + 2 * count + absmax_bytes, absmax_bytes);
}

template void optimizer_state_write<float>(const std::string&, const float*, const float*, uint64_t);
template void optimizer_state_read<float>(const std::string&, float*, float*, uint64_t, uint64_t, uint64_t);
template void optimizer_state_write<double>(const std::string&, const double*, const double*, uint64_t);
template void optimizer_state_read<double>(const std::string&, double*, double*, uint64_t, uint64_t, uint64_t);

}  // namespace stapo
