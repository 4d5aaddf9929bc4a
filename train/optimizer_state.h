// The AdamW moments on disk, the same file for every engine (a CPU fp32 state resumes on the GPU and back):
// "STAPOADM" magic, u32 version, u32 bytes per element, u64 element count, then
//   version 2 (fp32 or fp64 moments): m and v, each in the order of the model's parameters
//     (CpuModel::parameters(), no padding);
//   version 4 (--moments 8bit: 8-bit block-wise moments, model/ops/adamw.h, except the tensors that keep fp32 ones,
//     train/adamw.h's keeps_fp32_moments: the input embedding; bytes per element 1): u32 block size (kQuantBlock),
//     u32 0, u64 block count, u64 fp32 element count E, then the fp32 m and v of the fp32 tensors (E each), the m
//     codes and the v codes of the others (count − E bytes each), then the m and v absmax (fp32, one per block);
//     each in parameter order (q8_moment_layout with align 1), a tensor's last block partial;
//   version 3 (written before the embedding kept fp32 moments): every tensor 8-bit, the same without E. Read
//     into version 4's layout: the embedding's codes decoded with its blocks' absmax, the values the old run's next
//     step would have decoded;
// then the XXH3-64 checksum of everything before it (u64). Version 1 files (no checksum) are still read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"  // defines: ParamSpec
#include "train/adamw.h"   // defines: Q8MomentLayout

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

// The moments of --moments 8bit on the host, packed as q8_moment_layout(specs, 1) lays them out.
struct Q8MomentState {
  std::vector<float> m, v;                // (fp32_elements) the tensors that keep fp32 moments
  std::vector<uint8_t> m_code, v_code;    // (code_elements) the others
  std::vector<float> m_absmax, v_absmax;  // (blocks)
};
// Zero moments of that size: m and v 0, the codes of 0, absmax 0.
Q8MomentState q8_moment_state(const Q8MomentLayout& layout);

// The model's tensors `specs` (model/params.h order) fix the layout; a state of other sizes is an error.
void optimizer_state_write_q8(const std::string& path, const std::vector<ParamSpec>& specs, const Q8MomentState& state);
// Reads version 4, or version 3 converted (above), into `state` (resized). A file of the other kind of moments is
// an error that names the flag to resume with; one for other tensors names its sizes and the model's.
void optimizer_state_read_q8(const std::string& path, const std::vector<ParamSpec>& specs, Q8MomentState& state);

}  // namespace stapo
