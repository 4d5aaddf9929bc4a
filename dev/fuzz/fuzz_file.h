// A file the format fuzz targets hand to readers that take a path (shards and safetensors are memory-mapped):
// an anonymous in-memory file (memfd), rewritten for each input, reached as /proc/self/fd/N. No disk I/O.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

inline const std::string& fuzz_file(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("stapo-fuzz", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)))
    abort();
  return path;
}
