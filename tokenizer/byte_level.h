// GPT-2's reversible byte-to-character alphabet, used by ByteLevel tokenizers for their token text:
// printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100, U+0101, ... in byte order,
// so no token text holds whitespace or control characters. Every character is below U+0200.
#pragma once
#include <cstdint>
#include <string>

namespace stapo {

// The character (UTF-8, one or two bytes) that stands for `byte`.
const std::string& byte_level_character(uint8_t byte);
// The byte that code point `cp` stands for, or -1 when cp is not in the alphabet.
int byte_level_byte(uint32_t cp);

}  // namespace stapo
