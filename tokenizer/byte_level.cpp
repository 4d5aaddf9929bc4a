// The ByteLevel alphabet as two tables built once: byte → UTF-8 character and code point → byte.
#include "tokenizer/byte_level.h"

#include <array>
#include <vector>

namespace stapo {

static uint32_t code_point_of_byte(int byte) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next_unprintable = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<uint32_t>(b) : next_unprintable++;
    }
    return t;
  }();
  return table[byte];
}

const std::string& byte_level_character(uint8_t byte) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = code_point_of_byte(b);
      if (cp < 0x80)
        t[b] = std::string(1, static_cast<char>(cp));
      else
        t[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    return t;
  }();
  return table[byte];
}

int byte_level_byte(uint32_t cp) {
  static const std::vector<int> table = [] {
    std::vector<int> t(512, -1);
    for (int b = 0; b < 256; ++b) t[code_point_of_byte(b)] = b;
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

}  // namespace stapo
