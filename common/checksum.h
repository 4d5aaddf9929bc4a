// 64-bit content checksums (xxHash's XXH3, from Debian's libxxhash-dev) for the files stapo writes and reads
// back: data shards and optimizer states. They catch what structural checks cannot (a flipped bit in a token,
// a moment, a stored log-prob); they are not a defence against deliberate forgery.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace stapo {

// XXH3-64 of one buffer.
uint64_t checksum(const void* data, size_t bytes);

// XXH3-64 of data fed in pieces; the same value as checksum() over their concatenation.
class Checksum {
 public:
  Checksum();
  ~Checksum();
  Checksum(const Checksum&) = delete;
  Checksum& operator=(const Checksum&) = delete;
  void update(const void* data, size_t bytes);
  uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string checksum_hex(uint64_t value);  // 16 hex digits, for messages

}  // namespace stapo
