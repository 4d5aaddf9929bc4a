#include "data/shard.h"

#include <cmath>
#include <cstddef>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <unistd.h>

#include "common/checked.h"
#include "common/checksum.h"
#include "common/error.h"

namespace stapo {

namespace {

constexpr char kMagic[8] = {'S', 'T', 'A', 'P', 'O', 'P', 'R', 'F'};

// On-disk header; every field little-endian, fixed size so the sections after it start 8-aligned.
struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  int64_t num_pairs;
  int64_t num_tokens;
  int32_t vocab_size;
  int32_t max_length;
  int32_t max_prompt_length;
  int32_t truncation;  // 0 keep_end, 1 keep_start
  int64_t pairs_read, pairs_skipped, pairs_truncated;
  uint64_t table_offset, reference_offset, ids_offset, ids_bytes, tokens_offset;
  int32_t has_reference;
  int32_t reserved0;
  char tokenizer_hash[128];
  char template_name[32];
  char reference_tag[128];
  uint64_t content_checksum;    // XXH3-64 of the header's fixed fields, the pair table and the ids
  uint64_t tokens_checksum;     // XXH3-64 of the token section
  uint64_t reference_checksum;  // XXH3-64 of the reference section and reference_tag, once has_reference
  uint8_t reserved[80];
};
static_assert(sizeof(ShardHeader) == 512, "the shard header is 512 bytes on disk");
// The offsets docs/data-format.md documents.
static_assert(offsetof(ShardHeader, pairs_read) == 48 && offsetof(ShardHeader, table_offset) == 72 &&
                  offsetof(ShardHeader, has_reference) == 112 && offsetof(ShardHeader, tokenizer_hash) == 120 &&
                  offsetof(ShardHeader, template_name) == 248 && offsetof(ShardHeader, reference_tag) == 280 &&
                  offsetof(ShardHeader, content_checksum) == 408 && offsetof(ShardHeader, reference_checksum) == 424,
              "header layout differs from docs/data-format.md");

struct ShardPairEntry {
  uint64_t token_offset;  // in tokens, from the start of the token section
  int32_t prompt_length, chosen_length, rejected_length;
  uint32_t id_length;
  uint64_t id_offset;  // in bytes, from the start of the id section
};
static_assert(sizeof(ShardPairEntry) == 32, "a pair entry is 32 bytes on disk");

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// The content checksum: the header's fields that never change after prepare_data (bytes [0, 112): magic to
// the section offsets; [120, 280): tokenizer hash and template), then the pair table, then the ids.
uint64_t content_checksum(const ShardHeader& header, const void* table, size_t table_bytes, const void* ids,
                          size_t ids_bytes) {
  Checksum sum;
  const auto* h = reinterpret_cast<const uint8_t*>(&header);
  sum.update(h, offsetof(ShardHeader, has_reference));
  sum.update(h + offsetof(ShardHeader, tokenizer_hash), offsetof(ShardHeader, reference_tag) -
                                                            offsetof(ShardHeader, tokenizer_hash));
  sum.update(table, table_bytes);
  sum.update(ids, ids_bytes);
  return sum.digest();
}

// The reference checksum covers the values and the tag of the model that wrote them.
uint64_t reference_checksum(const float* reference, int64_t num_pairs, const char (&tag)[128]) {
  Checksum sum;
  sum.update(reference, static_cast<size_t>(num_pairs) * 2 * sizeof(float));
  sum.update(tag, sizeof(tag));
  return sum.digest();
}

std::string corrupt(const std::string& path) {
  return cat(path, " is corrupt (a flipped bit, a partial copy or an edit); re-run prepare_data to rebuild it");
}

void copy_field(char* dst, size_t capacity, const std::string& value, const char* what) {
  STAPO_CHECK(value.size() < capacity, what, " '", value, "' is longer than the shard's ", capacity - 1,
              "-byte field");
  memcpy(dst, value.data(), value.size());
}

std::string read_field(const char* src, size_t capacity, const std::string& path, const char* what) {
  size_t n = strnlen(src, capacity);
  STAPO_CHECK(n < capacity, path, ": header field ", what, " is not terminated (corrupt shard)");
  return std::string(src, n);
}

ShardHeader read_header(const MappedFile& file) {
  ShardHeader header;
  STAPO_CHECK(file.size() >= sizeof(header), file.path(), " is not a stapo data shard (", file.size(),
              " bytes, shorter than the header); create one with prepare_data");
  memcpy(&header, file.data(), sizeof(header));
  STAPO_CHECK(memcmp(header.magic, kMagic, sizeof(kMagic)) == 0, file.path(),
              " is not a stapo data shard (bad magic); create one with prepare_data");
  STAPO_CHECK(header.version == kShardVersion, file.path(), " is a data shard of format version ", header.version,
              ", this build reads version ", kShardVersion, "; re-run prepare_data on the JSONL to rebuild it");
  STAPO_CHECK(header.header_bytes == sizeof(header), file.path(), ": header size ", header.header_bytes,
              " != ", sizeof(header), " (corrupt shard)");
  return header;
}

}  // namespace

ShardWriter::ShardWriter(const std::string& path, int32_t vocab_size)
    : path_(path),
      tokens_path_(cat(path, ".tokens.tmp.", getpid())),
      vocab_size_(vocab_size),
      tokens_checksum_(std::make_unique<Checksum>()) {
  output_check("shard", path, {});  // a directory or device under the final name: refused before any work
  tokens_ = std::make_unique<File>(tokens_path_, "wb");
}

ShardWriter::~ShardWriter() {
  tokens_.reset();
  std::remove(tokens_path_.c_str());
}

void ShardWriter::add(const TokenizedPair& p) {
  const int64_t index = num_pairs();
  STAPO_CHECK(!p.prompt.empty() && !p.chosen.empty() && !p.rejected.empty(), "pair ", index,
              " has an empty prompt or response; it cannot be written to ", path_);
  for (const auto* part : {&p.prompt, &p.chosen, &p.rejected}) {
    for (int32_t id : *part)
      STAPO_CHECK(id >= 0 && (vocab_size_ == 0 || id < vocab_size_), "pair ", index, " holds token id ", id,
                  " outside the vocabulary [0, ", vocab_size_, ")");
    tokens_->write(part->data(), part->size() * sizeof(int32_t));
    tokens_checksum_->update(part->data(), part->size() * sizeof(int32_t));
  }
  table_.push_back({num_tokens_, static_cast<int32_t>(p.prompt.size()), static_cast<int32_t>(p.chosen.size()),
                    static_cast<int32_t>(p.rejected.size()), static_cast<uint32_t>(p.id.size()), ids_.size()});
  ids_ += p.id;
  num_tokens_ += p.prompt.size() + p.chosen.size() + p.rejected.size();
}

void ShardWriter::finish(const ShardInfo& info) {
  static_assert(sizeof(Entry) == sizeof(ShardPairEntry) &&
                    offsetof(Entry, id_offset) == offsetof(ShardPairEntry, id_offset),
                "ShardWriter's table entries are written as the file's pair entries");
  truncation_check(info.truncation);
  STAPO_CHECK(info.vocab_size == vocab_size_, "ShardWriter for ", path_, ": vocab_size ", info.vocab_size,
              " at finish, ", vocab_size_, " at the start");
  ShardHeader header{};
  memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kShardVersion;
  header.header_bytes = sizeof(header);
  header.vocab_size = info.vocab_size;
  header.max_length = info.truncation.max_length;
  header.max_prompt_length = info.truncation.max_prompt_length;
  header.truncation = info.truncation.truncation == Truncation::keep_end ? 0 : 1;
  header.pairs_read = info.pairs_read;
  header.pairs_skipped = info.pairs_skipped;
  header.pairs_truncated = info.pairs_truncated;
  copy_field(header.tokenizer_hash, sizeof(header.tokenizer_hash), info.tokenizer_hash, "tokenizer hash");
  copy_field(header.template_name, sizeof(header.template_name), info.template_name, "template name");
  header.num_pairs = num_pairs();
  header.num_tokens = static_cast<int64_t>(num_tokens_);
  header.table_offset = sizeof(header);
  header.reference_offset = header.table_offset + table_.size() * sizeof(ShardPairEntry);
  header.ids_offset = header.reference_offset + table_.size() * 2 * sizeof(float);
  header.ids_bytes = ids_.size();
  header.tokens_offset = align8(header.ids_offset + ids_.size());
  header.content_checksum = content_checksum(header, table_.data(), table_.size() * sizeof(Entry), ids_.data(),
                                             ids_.size());
  header.tokens_checksum = tokens_checksum_->digest();
  tokens_->close();
  tokens_.reset();

  write_file_atomic(path_, [&](File& out) {
    out.write(&header, sizeof(header));
    out.write(table_.data(), table_.size() * sizeof(Entry));
    const std::vector<float> missing(table_.size() * 2, std::numeric_limits<float>::quiet_NaN());
    out.write(missing.data(), missing.size() * sizeof(float));
    out.write(ids_.data(), ids_.size());
    const char zeros[8] = {};
    out.write(zeros, header.tokens_offset - (header.ids_offset + ids_.size()));
    File in(tokens_path_, "rb");
    std::vector<char> buffer(1 << 22);
    for (uint64_t left = num_tokens_ * sizeof(int32_t); left > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
      in.read(buffer.data(), n);
      out.write(buffer.data(), n);
      left -= n;
    }
  });
}

void shard_write(const std::string& path, const ShardInfo& info, const std::vector<TokenizedPair>& pairs) {
  ShardWriter writer(path, info.vocab_size);
  for (const TokenizedPair& pair : pairs) writer.add(pair);
  writer.finish(info);
}

Shard::Shard(const std::string& path, ReferenceCheck reference_check) : file_(path) {
  ShardHeader header = read_header(file_);
  num_pairs_ = header.num_pairs;
  num_tokens_ = header.num_tokens;
  STAPO_CHECK(num_pairs_ >= 0 && num_tokens_ >= 0, path, ": negative counts in the header (corrupt shard)");
  // Sizes come from the file: every product and sum is checked, so that a wrapped value cannot pass.
  const auto n = static_cast<uint64_t>(num_pairs_);
  const std::string where = cat(path, ": the header's section sizes (", num_pairs_, " pairs, ", num_tokens_,
                                " tokens) are impossible (corrupt shard; re-run prepare_data)");
  const uint64_t table_bytes = checked_mul(n, sizeof(ShardPairEntry), where);
  const uint64_t reference_bytes = checked_mul(n, 2 * sizeof(float), where);
  const uint64_t token_bytes = checked_mul(static_cast<uint64_t>(num_tokens_), sizeof(int32_t), where);
  const uint64_t ids_end = checked_add(header.ids_offset, header.ids_bytes, where);
  bool layout_ok = header.table_offset == sizeof(header) &&
                   header.reference_offset == checked_add(header.table_offset, table_bytes, where) &&
                   header.ids_offset == checked_add(header.reference_offset, reference_bytes, where) &&
                   ids_end <= UINT64_MAX - 7 && header.tokens_offset == align8(ids_end) &&
                   file_.size() == checked_add(header.tokens_offset, token_bytes, where);
  STAPO_CHECK(layout_ok, path, ": section offsets do not match the file size ", file_.size(),
              " (truncated or corrupt shard; re-run prepare_data)");
  STAPO_CHECK(header.truncation == 0 || header.truncation == 1, path, ": unknown truncation mode ",
              header.truncation, " (corrupt shard)");
  STAPO_CHECK(header.vocab_size >= 0, path, ": negative vocab_size ", header.vocab_size, " (corrupt shard)");

  info_.tokenizer_hash = read_field(header.tokenizer_hash, sizeof(header.tokenizer_hash), path, "tokenizer_hash");
  info_.template_name = read_field(header.template_name, sizeof(header.template_name), path, "template_name");
  reference_tag_ = read_field(header.reference_tag, sizeof(header.reference_tag), path, "reference_tag");
  info_.vocab_size = header.vocab_size;
  info_.truncation = {header.max_length, header.max_prompt_length,
                      header.truncation == 0 ? Truncation::keep_end : Truncation::keep_start};
  info_.pairs_read = header.pairs_read;
  info_.pairs_skipped = header.pairs_skipped;
  info_.pairs_truncated = header.pairs_truncated;
  has_reference_ = header.has_reference != 0;

  table_ = file_.data() + header.table_offset;
  reference_ = reinterpret_cast<const float*>(file_.data() + header.reference_offset);
  ids_ = reinterpret_cast<const char*>(file_.data() + header.ids_offset);
  tokens_ = reinterpret_cast<const int32_t*>(file_.data() + header.tokens_offset);
  const auto tokens = static_cast<uint64_t>(num_tokens_);
  for (int64_t i = 0; i < num_pairs_; ++i) {
    ShardPairEntry e;
    memcpy(&e, table_ + i * sizeof(e), sizeof(e));
    // Written as differences, so that no sum of file values can wrap.
    const bool ok = e.prompt_length >= 1 && e.chosen_length >= 1 && e.rejected_length >= 1 &&
                    e.token_offset <= tokens &&
                    uint64_t(e.prompt_length) + uint64_t(e.chosen_length) + uint64_t(e.rejected_length) <=
                        tokens - e.token_offset &&
                    e.id_offset <= header.ids_bytes && e.id_length <= header.ids_bytes - e.id_offset;
    STAPO_CHECK(ok, path, ": pair ", i, " points outside the file (token offset ", e.token_offset, ", lengths ",
                e.prompt_length, "/", e.chosen_length, "/", e.rejected_length, ", id offset ", e.id_offset,
                "; corrupt shard: re-run prepare_data)");
  }
  // Every id inside the vocabulary, checked here so that a bad id is named with its pair before any training.
  for (int64_t i = 0; i < num_pairs_; ++i) {
    const PairView p = pair(i);
    const int64_t length = int64_t(p.prompt_length) + p.chosen_length + p.rejected_length;
    for (int64_t t = 0; t < length; ++t) {
      const int32_t id = p.prompt[t];
      STAPO_CHECK(id >= 0 && (header.vocab_size == 0 || id < header.vocab_size), path, ": pair ", i,
                  p.id.empty() ? "" : cat(" (id \"", p.id, "\")"), " holds token id ", id, " at position ", t,
                  ", outside the vocabulary [0, ", header.vocab_size, "); ", corrupt(path));
    }
  }
  const uint64_t content = content_checksum(header, table_, table_bytes, ids_, header.ids_bytes);
  STAPO_CHECK(content == header.content_checksum, path, ": the checksum of the header, pair table and ids is ",
              checksum_hex(content), ", the shard says ", checksum_hex(header.content_checksum), ": ", corrupt(path));
  const uint64_t token_sum = checksum(tokens_, token_bytes);
  STAPO_CHECK(token_sum == header.tokens_checksum, path, ": the checksum of the tokens is ", checksum_hex(token_sum),
              ", the shard says ", checksum_hex(header.tokens_checksum), ": ", corrupt(path));
  if (has_reference_) {
    const uint64_t ref_sum = reference_checksum(reference_, num_pairs_, header.reference_tag);
    reference_intact_ = ref_sum == header.reference_checksum;
    STAPO_CHECK(reference_intact_ || reference_check == ReferenceCheck::skip, path,
                ": the checksum of the stored reference log-probs is ", checksum_hex(ref_sum), ", the shard says ",
                checksum_hex(header.reference_checksum),
                ": they were changed after the reference pass; run it again (train with --ref precompute)");
  }
}

PairView Shard::pair(int64_t index) const {
  STAPO_CHECK(index >= 0 && index < num_pairs_, "pair index ", index, " out of range [0, ", num_pairs_, ") in ",
              path());
  ShardPairEntry e;
  memcpy(&e, table_ + index * sizeof(e), sizeof(e));
  const int32_t* p = tokens_ + e.token_offset;
  return {p,
          p + e.prompt_length,
          p + e.prompt_length + e.chosen_length,
          e.prompt_length,
          e.chosen_length,
          e.rejected_length,
          std::string_view(ids_ + e.id_offset, e.id_length)};
}

void Shard::check_tokenizer(const std::string& tokenizer_hash) const {
  STAPO_CHECK(tokenizer_hash == info_.tokenizer_hash, path(), " was tokenized by a different tokenizer (shard hash ",
              info_.tokenizer_hash, ", this tokenizer ", tokenizer_hash,
              "); re-run prepare_data with the tokenizer you train with");
}

void shard_write_reference_logps(const std::string& path, int64_t first_pair, const std::vector<float>& logps) {
  uint64_t offset;
  {
    Shard shard(path, ReferenceCheck::skip);
    STAPO_CHECK(logps.size() % 2 == 0, "reference log-probs come in (chosen, rejected) pairs, got ", logps.size(),
                " values for ", path);
    auto count = static_cast<int64_t>(logps.size() / 2);
    STAPO_CHECK(first_pair >= 0 && first_pair + count <= shard.num_pairs(), "reference log-probs for pairs [",
                first_pair, ", ", first_pair + count, ") do not fit the ", shard.num_pairs(), " pairs of ", path);
    for (size_t i = 0; i < logps.size(); ++i)
      STAPO_CHECK(std::isfinite(logps[i]), "reference log-prob of pair ", first_pair + static_cast<int64_t>(i / 2),
                  (i % 2 ? " (rejected)" : " (chosen)"), " is ", logps[i], "; not written to ", path);
    offset = sizeof(ShardHeader) + static_cast<uint64_t>(shard.num_pairs()) * sizeof(ShardPairEntry) +
             static_cast<uint64_t>(first_pair) * 2 * sizeof(float);
  }
  // The stored values change: the shard has no complete reference until shard_mark_reference_complete.
  const int32_t none = 0;
  File file(path, "r+b");
  STAPO_CHECK(fseek(file.get(), offsetof(ShardHeader, has_reference), SEEK_SET) == 0, "cannot seek in ", path);
  file.write(&none, sizeof(none));
  STAPO_CHECK(fseek(file.get(), static_cast<long>(offset), SEEK_SET) == 0, "cannot seek in ", path);
  file.write(logps.data(), logps.size() * sizeof(float));
  file.close();
}

void shard_mark_reference_complete(const std::string& path, const std::string& reference_tag) {
  ShardHeader header{};
  copy_field(header.reference_tag, sizeof(header.reference_tag), reference_tag, "reference tag");
  {
    Shard shard(path);
    const float* ref = shard.reference_logps();
    for (int64_t i = 0; i < shard.num_pairs() * 2; ++i)
      STAPO_CHECK(!std::isnan(ref[i]), path, ": the reference log-prob of pair ", i / 2,
                  (i % 2 ? " (rejected)" : " (chosen)"), " was never written; finish the reference pass first");
    header.reference_checksum = reference_checksum(ref, shard.num_pairs(), header.reference_tag);
  }
  header.has_reference = 1;
  // The tag and checksum first, the flag last: a crash in between leaves a shard without a reference.
  File file(path, "r+b");
  STAPO_CHECK(fseek(file.get(), offsetof(ShardHeader, reference_tag), SEEK_SET) == 0, "cannot seek in ", path);
  file.write(header.reference_tag, sizeof(header.reference_tag));
  STAPO_CHECK(fseek(file.get(), offsetof(ShardHeader, reference_checksum), SEEK_SET) == 0, "cannot seek in ", path);
  file.write(&header.reference_checksum, sizeof(header.reference_checksum));
  STAPO_CHECK(fflush(file.get()) == 0 && fsync(fileno(file.get())) == 0, "cannot flush ", path, ": ",
              strerror(errno));
  STAPO_CHECK(fseek(file.get(), offsetof(ShardHeader, has_reference), SEEK_SET) == 0, "cannot seek in ", path);
  file.write(&header.has_reference, sizeof(header.has_reference));
  file.close();
}

}  // namespace stapo
