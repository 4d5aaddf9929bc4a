// The AdamW moments on disk, the same file for every engine (a CPU fp32 state resumes on the GPU and back):
// "STAPOADM" magic, u32 version 2, u32 bytes per element, u64 element count, then m and v, each in the
// order of the model's parameters (CpuModel::parameters(), no padding), then the XXH3-64 checksum of
// everything before it (u64). Version 1 files (no checksum) are still read.
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

}  // namespace stapo
