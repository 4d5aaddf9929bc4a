// Checked arithmetic for sizes and offsets read from files: a shard, a safetensors header or a config that
// makes `offset + length` or `count × size` wrap must be refused, not pass a bounds check with a small
// wrapped value. Each helper throws a stapo::Error naming what overflowed (the caller says which file).
#pragma once
#include <cstdint>

#include "common/error.h"

namespace stapo {

template <typename... Args>
uint64_t checked_add(uint64_t a, uint64_t b, const Args&... what) {
  uint64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) fail(what..., " (", a, " + ", b, " overflows 64 bits)");
  return sum;
}

template <typename... Args>
uint64_t checked_mul(uint64_t a, uint64_t b, const Args&... what) {
  uint64_t product;
  if (__builtin_mul_overflow(a, b, &product)) fail(what..., " (", a, " x ", b, " overflows 64 bits)");
  return product;
}

}  // namespace stapo
