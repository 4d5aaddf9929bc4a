// The attention test cases every implementation is checked on (the SIMT and tensor-core kernels on the GPU in
// test_attention.cpp, the tensor-core kernels' source under the CPU emulation in
// test_attention_flash2_emulated.cpp): causal, GQA and MQA, sliding windows, packed rows and padding, lengths
// that are not multiples of the tiles, and tiles wholly visible (the unmasked path) as well as masked ones; and one
// sequence id that comes back after another's (the masking rule allows it: equal ids see each other), which puts an
// invisible key tile between visible ones, alone and under a sliding window.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"         // defines: cat
#include "model/ops/attention.h"  // defines: AttentionShape

namespace stapo::test {

struct AttentionCase {
  AttentionShape shape;
  std::vector<int> lengths;  // packed sequence lengths per row; the rest of the row is padding
  std::vector<int> ids = {};  // their segment ids (empty: 0, 1, 2, …)
};

// rows, T, H, Hkv, D, window.
inline std::vector<AttentionCase> attention_cases() {
  return {
      {{1, 1, 1, 1, 64, 0}, {1}},
      {{2, 67, 4, 2, 64, 0}, {30, 37}},            // row: two packed sequences; 67 = 64 + 3
      {{1, 130, 2, 1, 128, 37}, {130}},            // window not a tile multiple, MQA
      {{3, 100, 8, 2, 128, 0}, {13, 50, 20}},      // three sequences and 17 padding positions per row
      {{1, 200, 4, 4, 64, 64}, {90, 110}},         // window + packing, MHA
      {{2, 257, 2, 1, 128, 100}, {257}},           // window spanning several tiles, one tile of a single row
      {{1, 192, 2, 1, 64, 0}, {192}},              // one sequence: tiles wholly below the diagonal (no mask)
      {{1, 160, 4, 2, 128, 0}, {150}},             // the same at D = 128, then padding
      {{1, 256, 2, 1, 64, 0}, {128, 64, 64}, {0, 1, 0}},  // key tile 2 hidden from query tile 3, tiles 0, 1, 3 not
      {{1, 600, 2, 1, 128, 0}, {250, 350}},        // 19 tiles of 32: more than the 16 a block's tile flags take per round
      {{1, 300, 2, 1, 64, 100}, {80, 60, 100, 50}, {0, 1, 0, 2}},  // a window reaching back into the id that returns
  };
}

inline std::vector<int32_t> packed_segments(const AttentionCase& c) {
  std::vector<int32_t> seg((size_t)c.shape.rows * c.shape.T, -1);
  for (int r = 0; r < c.shape.rows; ++r) {
    int p = 0;
    for (size_t s = 0; s < c.lengths.size(); ++s)
      for (int i = 0; i < c.lengths[s] && p < c.shape.T; ++i)
        seg[(size_t)r * c.shape.T + p++] = (int32_t)(c.ids.empty() ? s : c.ids[s]);
  }
  return seg;
}

inline std::string describe(const AttentionShape& s) {
  return cat("rows=", s.rows, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " D=", s.D, " window=", s.window);
}

// −inf (padding) compares equal to −inf: map it to a finite sentinel in both.
inline std::vector<float> finite_lse(std::vector<float> lse) {
  for (float& x : lse)
    if (std::isinf(x) && x < 0) x = -1e30f;
  return lse;
}

}  // namespace stapo::test
