// Tokenized preference shards (layout in docs/data-format.md). One little-endian file per dataset split:
//   header (512 bytes: magic, version, tokenizer hash, template, truncation settings, counts, offsets)
//   pair table  (num_pairs × 32 bytes: token offset, prompt/chosen/rejected lengths, id offset/length)
//   reference   (num_pairs × 2 float32: Sref(chosen), Sref(rejected); NaN until the trainer's reference pass)
//   ids         (the optional string ids, concatenated)
//   tokens      (int32: prompt, chosen, rejected of pair 0, then pair 1, ...)
// Written once by prepare_data (atomically); read through a memory map; only the reference section is
// ever rewritten, in place, so a shard never needs a second copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/checksum.h"  // defines: Checksum
#include "common/file_io.h"
#include "data/truncate.h"

namespace stapo {

// 2: checksums of the content, the tokens and the reference section (version 1 had none: re-run prepare_data).
constexpr uint32_t kShardVersion = 2;

// What a shard says about how it was made.
struct ShardInfo {
  std::string tokenizer_hash;  // Tokenizer::content_hash(), at most 127 bytes
  std::string template_name;   // ChatTemplate::name(), at most 31 bytes
  int32_t vocab_size = 0;
  TruncationConfig truncation;
  int64_t pairs_read = 0, pairs_skipped = 0, pairs_truncated = 0;  // what prepare_data printed
};

struct TokenizedPair {
  std::string id;  // from the input's "id" field, "" when absent
  std::vector<int32_t> prompt, chosen, rejected;
};

// Streams pairs into a shard, so that memory holds 32 bytes and the id per pair, not the tokens: add() appends
// a pair's tokens to a temporary file beside `path`; finish() writes the header, pair table, reference and id
// sections, then the tokens, into path atomically. Unfinished (an error on the way), it leaves no file.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int32_t vocab_size);  // vocab_size 0: ids are not range-checked
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  void add(const TokenizedPair& pair);  // a stapo::Error for an empty part or an id outside the vocabulary
  int64_t num_pairs() const { return static_cast<int64_t>(table_.size()); }
  void finish(const ShardInfo& info);  // info.vocab_size must be the constructor's

 private:
  struct Entry {
    uint64_t token_offset;
    int32_t prompt_length, chosen_length, rejected_length;
    uint32_t id_length;
    uint64_t id_offset;
  };
  std::string path_, tokens_path_;
  int32_t vocab_size_;
  std::unique_ptr<File> tokens_;  // the temporary token section
  std::unique_ptr<Checksum> tokens_checksum_;
  std::vector<Entry> table_;
  std::string ids_;
  uint64_t num_tokens_ = 0;
};

void shard_write(const std::string& path, const ShardInfo& info, const std::vector<TokenizedPair>& pairs);

struct PairView {
  const int32_t* prompt;
  const int32_t* chosen;
  const int32_t* rejected;
  int32_t prompt_length, chosen_length, rejected_length;
  std::string_view id;
};

// Whether opening a shard verifies the checksum of its stored reference log-probs: always, except to
// overwrite them (shard_write_reference_logps), which is how a damaged reference is repaired.
enum class ReferenceCheck { verify, skip };

class Shard {
 public:
  // Checks magic, version, every size and offset (overflow-safe), that every token id lies inside the
  // vocabulary (naming the pair) and the checksums; a bad file is a stapo::Error naming it.
  explicit Shard(const std::string& path, ReferenceCheck reference_check = ReferenceCheck::verify);

  const std::string& path() const { return file_.path(); }
  const ShardInfo& info() const { return info_; }
  int64_t num_pairs() const { return num_pairs_; }
  int64_t num_tokens() const { return num_tokens_; }
  PairView pair(int64_t index) const;

  // Whether every reference log-prob has been written (shard_mark_reference_complete), and by what model.
  bool has_reference() const { return has_reference_; }
  const std::string& reference_tag() const { return reference_tag_; }
  // Whether the stored reference log-probs match their checksum (only ever false when opened with
  // ReferenceCheck::skip: verify throws instead).
  bool reference_intact() const { return reference_intact_; }
  // (num_pairs, 2): Sref(chosen), Sref(rejected); NaN where not yet written.
  const float* reference_logps() const { return reference_; }

  // A stapo::Error naming both hashes when the shard was tokenized by another tokenizer.
  void check_tokenizer(const std::string& tokenizer_hash) const;

 private:
  MappedFile file_;
  ShardInfo info_;
  int64_t num_pairs_ = 0, num_tokens_ = 0;
  bool has_reference_ = false, reference_intact_ = false;
  std::string reference_tag_;
  const uint8_t* table_ = nullptr;
  const float* reference_ = nullptr;
  const char* ids_ = nullptr;
  const int32_t* tokens_ = nullptr;
};

// Writes Sref for pairs [first_pair, first_pair + logps.size()/2) in place; logps is (n, 2) as above.
// Ranks of a distributed reference pass may each write their own range. Reopen the Shard afterwards.
void shard_write_reference_logps(const std::string& path, int64_t first_pair, const std::vector<float>& logps);
// Checks that no reference log-prob is missing (NaN), then records `reference_tag` (which model produced
// them) and marks the shard as having a reference.
void shard_mark_reference_complete(const std::string& path, const std::string& reference_tag);

}  // namespace stapo
