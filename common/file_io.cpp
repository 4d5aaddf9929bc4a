#include "common/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace stapo {

namespace fs = std::filesystem;

std::string read_text_file(const std::string& path) {
  File file(path, "rb");
  std::string text;
  char buffer[1 << 16];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), file.get())) > 0) text.append(buffer, got);
  STAPO_CHECK(!ferror(file.get()), "cannot read ", path, ": ", strerror(errno));
  return text;
}

bool file_exists(const std::string& path) { return fs::exists(path); }
bool is_directory(const std::string& path) { return fs::is_directory(path); }

void make_directories(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  STAPO_CHECK(!ec, "cannot create directory ", path, ": ", ec.message());
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, [&](File& file) { file.write(bytes.data(), bytes.size()); });
}

void write_file_atomic(const std::string& path, const std::function<void(File&)>& fill) {
  std::string tmp = cat(path, ".tmp.", getpid());
  try {
    File file(tmp, "wb");
    fill(file);
    STAPO_CHECK(fflush(file.get()) == 0 && fsync(fileno(file.get())) == 0, "cannot flush ", tmp, ": ",
                strerror(errno));
    file.close();
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  STAPO_CHECK(rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
              strerror(errno));
}

void replace_directory(const std::string& tmp_dir, const std::string& final_dir) {
  std::error_code ec;
  std::string old = final_dir + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(final_dir)) {
    fs::rename(final_dir, old, ec);
    STAPO_CHECK(!ec, "cannot move ", final_dir, " aside: ", ec.message());
  }
  fs::rename(tmp_dir, final_dir, ec);
  STAPO_CHECK(!ec, "cannot rename ", tmp_dir, " to ", final_dir, ": ", ec.message());
  fs::remove_all(old, ec);
}

File::File(const std::string& path, const char* mode) : path_(path) {
  fp_ = fopen(path.c_str(), mode);
  STAPO_CHECK(fp_ != nullptr, "cannot open ", path, " (mode ", mode, "): ", strerror(errno));
}

File::~File() {
  if (fp_) fclose(fp_);
}

void File::read(void* dst, size_t bytes) {
  size_t got = fread(dst, 1, bytes, fp_);
  STAPO_CHECK(got == bytes, ferror(fp_) ? cat("cannot read ", path_, ": ", strerror(errno))
                                        : cat(path_, " is truncated: wanted ", bytes, " bytes, got ", got));
}

void File::write(const void* src, size_t bytes) {
  STAPO_CHECK(fwrite(src, 1, bytes, fp_) == bytes, "cannot write ", path_, ": ", strerror(errno));
}

void File::close() {
  FILE* fp = fp_;
  fp_ = nullptr;
  STAPO_CHECK(fclose(fp) == 0, "cannot close ", path_, ": ", strerror(errno));
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = open(path.c_str(), O_RDONLY);
  STAPO_CHECK(fd >= 0, "cannot open ", path, ": ", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("cannot stat ", path, ": ", strerror(err));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    STAPO_CHECK(p != MAP_FAILED, "cannot mmap ", path, ": ", strerror(err));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace stapo
