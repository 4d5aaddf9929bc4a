// Checked file I/O: every failure names the file and the OS reason. Writes that users depend on
// (checkpoints, shards) go through write_file_atomic: temp file + fsync + rename, so a crash never
// leaves a half-written file under the final name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace stapo {

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
void make_directories(const std::string& path);  // mkdir -p

// Writes bytes to path atomically (path.tmp.<pid> then rename).
void write_file_atomic(const std::string& path, std::string_view bytes);
class File;
// The same for content written piece by piece: `fill` writes into the temporary file; if it throws, the
// temporary file is removed and path is untouched.
void write_file_atomic(const std::string& path, const std::function<void(File&)>& fill);

// Replaces directory `final_dir` by the fully written `tmp_dir` (rename; the old one is removed).
void replace_directory(const std::string& tmp_dir, const std::string& final_dir);

// RAII FILE* with checked reads and writes.
class File {
 public:
  File(const std::string& path, const char* mode);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  void read(void* dst, size_t bytes);  // all bytes or an error naming the file ("truncated")
  void write(const void* src, size_t bytes);
  void close();  // flushes; errors (disk full) are reported here
  FILE* get() { return fp_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* fp_ = nullptr;
};

// Read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace stapo
