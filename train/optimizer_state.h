// The AdamW moments on disk, the same file for every engine (a CPU fp32 state resumes on the GPU and back):
// "STAPOADM" magic, u32 version, u32 bytes per element, u64 element count, then
//   version 2 (fp32 or fp64 moments): m and v, each in the order of the model's parameters
//     (CpuModel::parameters(), no padding);
//   version 3 (8-bit block-wise moments, model/ops/adamw.h; bytes per element 1): u32 block size (kQuantBlock),
//     u32 0, u64 block count, the m codes and the v codes (one byte per parameter, in that order), then the m and
//     v absmax (fp32, one per block; each tensor's blocks in parameter order, a tensor's last block partial);
// then the XXH3-64 checksum of everything before it (u64). Version 1 files (no checksum) are still read.
#pragma once
#include <cstdint>
#include <string>

namespace stapo {

template <typename T>
void optimizer_state_write(const std::string& path, const T* m, const T* v, uint64_t count);
// Reads a file of exactly `count` elements of T per moment: elements [begin, begin + length) of each into m and v
// (length elements each; a data-parallel rank's range). Any other magic, version, element size or count, a
// file of another length or a checksum that differs is an error naming the file.
template <typename T>
void optimizer_state_read(const std::string& path, T* m, T* v, uint64_t count, uint64_t begin, uint64_t length);
template <typename T>
void optimizer_state_read(const std::string& path, T* m, T* v, uint64_t count) {
  optimizer_state_read(path, m, v, count, 0, count);
}

// 8-bit block-wise moments: `count` codes and `blocks` absmax per moment.
void optimizer_state_write_q8(const std::string& path, const uint8_t* m_code, const uint8_t* v_code, uint64_t count,
                              const float* m_absmax, const float* v_absmax, uint64_t blocks);
// Reads exactly that; a file of the other kind of moments is an error that names the flag to resume with.
void optimizer_state_read_q8(const std::string& path, uint8_t* m_code, uint8_t* v_code, uint64_t count,
                             float* m_absmax, float* v_absmax, uint64_t blocks);

}  // namespace stapo
