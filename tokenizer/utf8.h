// UTF-8 helpers for the tokenizers: validation with a precise error, character lengths, and the lossy
// repair decode() applies to byte sequences that ids can cut mid-character (U+FFFD, as each reference
// library places them).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace stapo {

// Length of the valid UTF-8 character starting at text[pos], or 0 when the bytes there are not one.
size_t utf8_char_length(std::string_view text, size_t pos);
// Throws a stapo::Error naming the byte offset (and `what`, e.g. "input text") of the first invalid byte.
void utf8_validate(std::string_view text, const char* what);
// Copies bytes, replacing each maximal invalid subpart by U+FFFD (Python, Rust), or with per_byte each
// invalid byte (sentencepiece).
std::string utf8_make_valid(std::string_view bytes, bool per_byte = false);
// Appends the UTF-8 bytes of a code point (<= U+10FFFF, not a surrogate).
void utf8_append(std::string& out, uint32_t code_point);
// The code point of the valid character of `len` bytes at text[pos].
uint32_t utf8_decode(std::string_view text, size_t pos, size_t len);
// Unicode White_Space (what Rust's char::is_whitespace tests).
bool utf8_is_white_space(uint32_t code_point);

// The byte of a SentencePiece byte piece "<0xXX>", or -1 for any other piece.
int parse_byte_piece(std::string_view piece);

}  // namespace stapo
