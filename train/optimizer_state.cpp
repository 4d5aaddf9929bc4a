// AdamW moments on disk (train/optimizer_state.h).
#include "train/optimizer_state.h"

#include <algorithm>
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
constexpr uint32_t kVersionQ8All = 3;   // every tensor 8-bit
constexpr uint32_t kVersionQ8 = 4;      // the embedding's moments fp32 (keeps_fp32_moments)
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

// The file's header checked against what the engine holds (`q8`: 8-bit moments, else `element_bytes` each) and
// `count`; returns the version.
uint32_t state_header(const MappedFile& f, const std::string& path, bool q8, uint32_t element_bytes, uint64_t count) {
  STAPO_CHECK(f.size() >= kHeaderBytes, path, ": not a stapo optimizer state file (", f.size(), " bytes)");
  uint32_t header[2];
  uint64_t stored = 0;
  STAPO_CHECK(std::memcmp(f.data(), kMagic, 8) == 0, path, ": not a stapo optimizer state file");
  std::memcpy(header, f.data() + 8, sizeof(header));
  std::memcpy(&stored, f.data() + 8 + sizeof(header), sizeof(stored));
  const uint32_t version = header[0];
  STAPO_CHECK(version >= 1 && version <= kVersionQ8, path, ": optimizer state version ", version,
              ", this build reads 1 to ", kVersionQ8);
  const bool file_q8 = version == kVersionQ8All || version == kVersionQ8;
  STAPO_CHECK(q8 || !file_q8, path,
              " holds 8-bit block-wise AdamW moments: resume with --moments 8bit (this run keeps fp32 moments)");
  STAPO_CHECK(!q8 || file_q8, path,
              " holds fp32 AdamW moments: resume with --moments fp32 (this run keeps 8-bit moments)");
  STAPO_CHECK(header[1] == element_bytes, path, ": optimizer state has ", header[1], "-byte elements, this engine ",
              element_bytes);
  STAPO_CHECK(stored == count, path, ": optimizer state for ", stored, " parameters, the model has ", count);
  return version;
}

// The file's length against `payload_bytes` after the header, and its checksum.
void state_verify(const MappedFile& f, const std::string& path, uint32_t version, uint64_t payload_bytes) {
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
}

// Version 4's; version 3's is its first 16 bytes (no fp32 elements).
struct Q8Header {
  uint32_t block_size = 0, reserved = 0;
  uint64_t blocks = 0, fp32_elements = 0;
};
constexpr size_t kQ8HeaderBytesAll = 16;
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
  state_verify(f, path, state_header(f, path, false, sizeof(T), count), 2 * moment_bytes);
  const uint8_t* first = f.data() + kHeaderBytes + begin * sizeof(T);
  std::memcpy(m, first, length * sizeof(T));
  std::memcpy(v, first + moment_bytes, length * sizeof(T));
}

Q8MomentState q8_moment_state(const Q8MomentLayout& layout) {
  Q8MomentState s;
  s.m.assign(layout.fp32_elements, 0.0f);
  s.v.assign(layout.fp32_elements, 0.0f);
  s.m_code.assign(layout.code_elements, quant_encode(quant_map(true).bound, 0.0f));
  s.v_code.assign(layout.code_elements, quant_encode(quant_map(false).bound, 0.0f));
  s.m_absmax.assign(layout.blocks, 0.0f);
  s.v_absmax.assign(layout.blocks, 0.0f);
  return s;
}

void optimizer_state_write_q8(const std::string& path, const std::vector<ParamSpec>& specs, const Q8MomentState& s) {
  const Q8MomentLayout layout = q8_moment_layout(specs, 1);
  STAPO_CHECK(s.m.size() == layout.fp32_elements && s.v.size() == layout.fp32_elements &&
                  s.m_code.size() == layout.code_elements && s.v_code.size() == layout.code_elements &&
                  s.m_absmax.size() == layout.blocks && s.v_absmax.size() == layout.blocks,
              path, ": writing 8-bit moments of ", s.m.size(), " fp32 elements, ", s.m_code.size(), " codes and ",
              s.m_absmax.size(), " blocks for a model that needs ", layout.fp32_elements, ", ", layout.code_elements,
              " and ", layout.blocks);
  const Q8Header header{uint32_t(kQuantBlock), 0, layout.blocks, layout.fp32_elements};
  const uint64_t fp32_bytes = layout.fp32_elements * sizeof(float), absmax_bytes = layout.blocks * sizeof(float);
  state_write(path, kVersionQ8, 1, layout.fp32_elements + layout.code_elements,
              {{&header, sizeof(header)}, {s.m.data(), fp32_bytes}, {s.v.data(), fp32_bytes},
               {s.m_code.data(), layout.code_elements}, {s.v_code.data(), layout.code_elements},
               {s.m_absmax.data(), absmax_bytes}, {s.v_absmax.data(), absmax_bytes}});
}

void optimizer_state_read_q8(const std::string& path, const std::vector<ParamSpec>& specs, Q8MomentState& s) {
  const Q8MomentLayout layout = q8_moment_layout(specs, 1);
  const uint64_t count = layout.fp32_elements + layout.code_elements;
  const MappedFile f(path);
  const uint32_t version = state_header(f, path, true, 1, count);
  // The file's own sizes first (its length and checksum follow from them), then against the model's.
  const size_t header_bytes = version == kVersionQ8 ? sizeof(Q8Header) : kQ8HeaderBytesAll;
  STAPO_CHECK(f.size() >= kHeaderBytes + header_bytes, path, " has ", f.size(),
              " bytes: truncated or corrupt optimizer state");
  Q8Header header;
  std::memcpy(&header, f.data() + kHeaderBytes, header_bytes);
  STAPO_CHECK(header.fp32_elements <= count, path, ": ", header.fp32_elements, " fp32 moments of ", count,
              " parameters (corrupt optimizer state)");
  const uint64_t codes = count - header.fp32_elements;
  const uint64_t absmax_bytes = checked_mul(header.blocks, sizeof(float), path, ": absmax size");
  const uint64_t fp32_bytes = header.fp32_elements * sizeof(float);
  state_verify(f, path, version,
               checked_add(header_bytes + 2 * fp32_bytes + 2 * codes,
                           checked_mul(absmax_bytes, uint64_t(2), path, ": absmax size"), path, ": state size"));
  const uint8_t* at = f.data() + kHeaderBytes + header_bytes;
  const uint8_t *file_m = at + 2 * fp32_bytes, *file_v = file_m + codes;  // the codes
  std::vector<float> m_absmax(header.blocks), v_absmax(header.blocks);
  std::memcpy(m_absmax.data(), file_v + codes, absmax_bytes);
  std::memcpy(v_absmax.data(), file_v + codes + absmax_bytes, absmax_bytes);
  s = q8_moment_state(layout);
  if (version == kVersionQ8) {
    STAPO_CHECK(header.block_size == uint32_t(kQuantBlock) && header.blocks == layout.blocks &&
                    header.fp32_elements == layout.fp32_elements,
                path, ": 8-bit moments in ", header.blocks, " blocks of ", header.block_size, " with ",
                header.fp32_elements, " fp32 moments, this model needs ", layout.blocks, " blocks of ", kQuantBlock,
                " with ", layout.fp32_elements, " (the embedding's)");
    std::memcpy(s.m.data(), at, fp32_bytes);
    std::memcpy(s.v.data(), at + fp32_bytes, fp32_bytes);
    std::memcpy(s.m_code.data(), file_m, codes);
    std::memcpy(s.v_code.data(), file_v, codes);
    s.m_absmax = std::move(m_absmax);
    s.v_absmax = std::move(v_absmax);
    return;
  }
  // Version 3: every tensor 8-bit, in parameter order.
  size_t all_blocks = 0;
  for (const ParamSpec& p : specs) all_blocks += quant_blocks(p.numel);
  STAPO_CHECK(header.block_size == uint32_t(kQuantBlock) && header.blocks == all_blocks, path, ": 8-bit moments in ",
              header.blocks, " blocks of ", header.block_size, ", this model needs ", all_blocks, " blocks of ",
              kQuantBlock);
  const QuantMap m_map = quant_map(true), v_map = quant_map(false);
  size_t code = 0, block = 0;  // the tensor's first code and block in the file
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = specs[i].numel, to = layout.offset[i];
    if (layout.kind[i] == MomentKind::fp32) {  // decoded as model/ops/adamw.h's adamw_read decodes
      for (size_t e = 0; e < n; ++e) {
        s.m[to + e] = m_map.value[file_m[code + e]] * m_absmax[block + e / kQuantBlock];
        s.v[to + e] = v_map.value[file_v[code + e]] * v_absmax[block + e / kQuantBlock];
      }
    } else {
      std::memcpy(s.m_code.data() + to, file_m + code, n);
      std::memcpy(s.v_code.data() + to, file_v + code, n);
      const size_t b = quant_blocks(n);
      std::copy(m_absmax.begin() + ptrdiff_t(block), m_absmax.begin() + ptrdiff_t(block + b),
                s.m_absmax.begin() + ptrdiff_t(layout.block[i]));
      std::copy(v_absmax.begin() + ptrdiff_t(block), v_absmax.begin() + ptrdiff_t(block + b),
                s.v_absmax.begin() + ptrdiff_t(layout.block[i]));
    }
    code += n;
    block += quant_blocks(n);
  }
}

template void optimizer_state_write<float>(const std::string&, const float*, const float*, uint64_t);
template void optimizer_state_read<float>(const std::string&, float*, float*, uint64_t, uint64_t, uint64_t);
template void optimizer_state_write<double>(const std::string&, const double*, const double*, uint64_t);
template void optimizer_state_read<double>(const std::string&, double*, double*, uint64_t, uint64_t, uint64_t);

}  // namespace stapo
