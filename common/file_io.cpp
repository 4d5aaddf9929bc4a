#include "common/file_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace stapo {

namespace fs = std::filesystem;

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Opens path for reading (flags O_RDONLY or O_RDWR) and refuses anything but a regular file. O_NONBLOCK keeps
// the open itself from waiting for a FIFO's writer; it is cleared again for the reads.
int open_regular(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_NONBLOCK | O_CLOEXEC);
  STAPO_CHECK(fd >= 0, "cannot open ", path, ": ", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot stat ", path, ": ", strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, " is ", file_kind(st.st_mode), ", not a regular file: stapo reads only regular files (copy it to ",
         "one first)");
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

// Refuses to replace an existing path that is not a regular file (following links: a link to a device is a device).
void check_replaceable(const std::string& what, const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  STAPO_CHECK(S_ISREG(st.st_mode), what, path, " exists and is ", file_kind(st.st_mode),
              ", not a regular file: it is never replaced (outputs are written to a temporary file and renamed); ",
              "give the path of a file");
}

}  // namespace

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void output_check(const std::string& flag, const std::string& path, const std::vector<std::string>& inputs) {
  check_replaceable(flag + " ", path);
  for (const std::string& input : inputs)
    STAPO_CHECK(!same_file(path, input), flag, " ", path, " is the same file as the input ", input,
                ": writing it would destroy the input; choose another output path");
}

void output_dir_check(const std::string& flag, const std::string& dir, const std::vector<std::string>& inputs) {
  struct stat st;
  if (stat(dir.c_str(), &st) == 0)
    STAPO_CHECK(S_ISDIR(st.st_mode), flag, " ", dir, " exists and is ", file_kind(st.st_mode),
                ", not a directory; give a directory path");
  for (const std::string& input : inputs)
    STAPO_CHECK(!same_file(dir, input), flag, " ", dir, " is the same directory as the input ", input,
                ": writing it would replace the input while it is read; choose another output directory");
}

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
  check_replaceable("", path);
  std::string tmp = cat(path, ".tmp.", getpid());
  try {
    File file(tmp, "wb");
    fill(file);
    STAPO_CHECK(fflush(file.get()) == 0 && fsync(fileno(file.get())) == 0, "cannot flush ", tmp, ": ",
                strerror(errno));
    file.close();
    STAPO_CHECK(rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
                strerror(errno));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
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

RemoveOnExit::~RemoveOnExit() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

DirLock::DirLock(const std::string& dir, const std::string& flag) {
  const std::string path = dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  STAPO_CHECK(fd_ >= 0, "cannot create the lock file ", path, ": ", strerror(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    fail(flag, " ", dir, " is in use by another run (", path, " is locked",
         err == EWOULDBLOCK ? "" : cat(": ", strerror(err)), "); wait for it to end or choose another ", flag);
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

File::File(const std::string& path, const char* mode) : path_(path) {
  if (mode[0] == 'r') {
    const int fd = open_regular(path, std::strchr(mode, '+') ? O_RDWR : O_RDONLY);
    fp_ = fdopen(fd, mode);
    if (!fp_) ::close(fd);
  } else {
    fp_ = fopen(path.c_str(), mode);
  }
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
  const int fd = open_regular(path, O_RDONLY);
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
