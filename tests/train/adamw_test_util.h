// One tensor's compact AdamW state (model/ops/adamw.h) in host vectors: what the CPU twin's tests and the
// kernel's tests update and compare.
#pragma once
#include <cstdint>
#include <vector>

#include "model/ops/adamw.h"  // defines: AdamWState, MasterKind, split_high, quant_map

namespace stapo::test {

struct AdamWHostState {
  std::vector<uint16_t> weights;  // bf16 bits
  std::vector<float> master;      // MasterKind::fp32
  std::vector<int16_t> low;       // MasterKind::split
  std::vector<float> m, v, m_absmax, v_absmax;
  std::vector<uint8_t> m_code, v_code;

  // The weights of `kind` from an fp32 master (as kernels/adamw_compact.h's adamw_compact_init sets them), and
  // zero moments in both layouts.
  AdamWHostState(const std::vector<float>& initial, MasterKind kind) {
    const size_t n = initial.size();
    for (float x : initial) weights.push_back(split_high(x));
    if (kind == MasterKind::fp32) master = initial;
    if (kind == MasterKind::split)
      for (float x : initial) low.push_back(split_low(x));
    m.assign(n, 0.0f);
    v.assign(n, 0.0f);
    m_code.assign(n, quant_encode(quant_map(true).bound, 0.0f));
    v_code.assign(n, quant_encode(quant_map(false).bound, 0.0f));
    m_absmax.assign(quant_blocks(n), 0.0f);
    v_absmax.assign(quant_blocks(n), 0.0f);
  }
  AdamWState state() {
    AdamWState s;
    s.n = weights.size();
    s.weights = weights.data();
    s.master = master.empty() ? nullptr : master.data();
    s.low = low.empty() ? nullptr : low.data();
    s.m = m.data();
    s.v = v.data();
    s.m_code = m_code.data();
    s.v_code = v_code.data();
    s.m_absmax = m_absmax.data();
    s.v_absmax = v_absmax.data();
    return s;
  }
  float master_value(size_t i) const { return master.empty() ? split_join(weights[i], low[i]) : master[i]; }
};

}  // namespace stapo::test
