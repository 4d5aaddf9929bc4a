// Checked file I/O: every failure names the file and the OS reason. Writes that users depend on
// (checkpoints, shards) go through write_file_atomic: temp file + fsync + rename, so a crash never
// leaves a half-written file under the final name, and no error leaves the temporary file behind.
// Every file stapo reads must be a regular file: a FIFO (which would block forever), a device or a directory
// is refused naming it, before anything is read. An output must not be an input, nor anything but a regular
// file (output_check): a rename onto a device node would replace the device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stapo {

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
void make_directories(const std::string& path);  // mkdir -p

// Refuses `path` (given by `flag`) as an output when it exists and is not a regular file (a directory, a
// device such as /dev/null, a FIFO) or when it is the same file as one of `inputs` (also through a link).
void output_check(const std::string& flag, const std::string& path, const std::vector<std::string>& inputs);
// The same for an output directory: refused when it exists and is not a directory, or when it is one of
// `inputs` (directories or files).
void output_dir_check(const std::string& flag, const std::string& dir, const std::vector<std::string>& inputs);
// Whether two paths name the same existing file or directory (same device and inode).
bool same_file(const std::string& a, const std::string& b);

// Writes bytes to path atomically (path.tmp.<pid> then rename). A path that exists and is not a regular file
// is refused, never replaced.
void write_file_atomic(const std::string& path, std::string_view bytes);
class File;
// The same for content written piece by piece: `fill` writes into the temporary file; if it throws, the
// temporary file is removed and path is untouched.
void write_file_atomic(const std::string& path, const std::function<void(File&)>& fill);

// Replaces directory `final_dir` by the fully written `tmp_dir` (rename; the old one is removed).
void replace_directory(const std::string& tmp_dir, const std::string& final_dir);

// Removes a temporary file or directory (recursively) when it goes out of scope, whatever happened: a
// temporary renamed to its final name in between is gone already, and nothing is removed.
class RemoveOnExit {
 public:
  explicit RemoveOnExit(std::string path) : path_(std::move(path)) {}
  ~RemoveOnExit();
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;

 private:
  std::string path_;
};

// An exclusive lock on directory `dir` (flock on dir/.lock) held while the object lives, so that two runs
// never write into one folder: a second one is refused at once, naming the folder. The lock goes with the
// process, also when it is killed.
class DirLock {
 public:
  DirLock(const std::string& dir, const std::string& flag);  // flag: how the user named dir (e.g. "--out")
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

// RAII FILE* with checked reads and writes. A mode that reads ("r", "r+") needs a regular file.
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
