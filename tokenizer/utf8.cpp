// UTF-8 validation per RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
#include "tokenizer/utf8.h"

#include "common/error.h"

namespace stapo {

// Length of the character at pos, or 0 when invalid; *prefix gets the length of its longest valid-looking
// start (the "maximal subpart" that Python and Rust replace by one U+FFFD).
static size_t char_length(std::string_view text, size_t pos, size_t* prefix) {
  *prefix = 1;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  size_t left = text.size() - pos;
  uint8_t b0 = s[0];
  if (b0 < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (left < 2 || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    *prefix = i;
    if (i >= left || (s[i] & 0xC0) != 0x80) return 0;
  }
  return len;
}

size_t utf8_char_length(std::string_view text, size_t pos) {
  size_t prefix;
  return char_length(text, pos, &prefix);
}

void utf8_validate(std::string_view text, const char* what) {
  for (size_t pos = 0; pos < text.size();) {
    size_t len = utf8_char_length(text, pos);
    STAPO_CHECK(len > 0, what, " is not valid UTF-8: byte 0x", std::hex,
                static_cast<int>(static_cast<uint8_t>(text[pos])), std::dec, " at offset ", pos,
                " (convert the text to UTF-8 before tokenizing)");
    pos += len;
  }
}

std::string utf8_make_valid(std::string_view bytes, bool per_byte) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    size_t prefix;
    size_t len = char_length(bytes, pos, &prefix);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      pos += per_byte ? 1 : prefix;
    } else {
      out.append(bytes.substr(pos, len));
      pos += len;
    }
  }
  return out;
}

uint32_t utf8_decode(std::string_view text, size_t pos, size_t len) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + i])); };
  if (len == 1) return b(0);
  if (len == 2) return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
  if (len == 3) return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

bool utf8_is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace stapo
