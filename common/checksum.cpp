// XXH3-64 through xxHash's header-only mode: nothing to link, the same on every machine.
#include "common/checksum.h"

#include <cstdio>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/error.h"

namespace stapo {

struct Checksum::State {
  XXH3_state_t xxh;
};

uint64_t checksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

Checksum::Checksum() : state_(std::make_unique<State>()) {
  STAPO_CHECK(XXH3_64bits_reset(&state_->xxh) == XXH_OK, "xxHash: cannot start a checksum");
}

Checksum::~Checksum() = default;

void Checksum::update(const void* data, size_t bytes) {
  STAPO_CHECK(XXH3_64bits_update(&state_->xxh, data, bytes) == XXH_OK, "xxHash: cannot update a checksum");
}

uint64_t Checksum::digest() const { return XXH3_64bits_digest(&state_->xxh); }

std::string checksum_hex(uint64_t value) {
  char hex[17];
  snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(value));
  return hex;
}

}  // namespace stapo
