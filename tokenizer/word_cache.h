// Per-word cache of BPE results (the same words recur constantly in text). Sharded by hash, one mutex per
// shard, so the data pipeline's threads rarely contend; a full shard is simply cleared.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace stapo {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 64;  // longer words are rare and would crowd the cache

  // Appends the cached ids of word to out and returns true, or returns false.
  bool lookup(std::string_view word, std::vector<int32_t>& out) const {
    if (word.size() > kMaxWordBytes) return false;
    Shard& shard = shard_of(word);
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.map.find(std::string(word));
    if (it == shard.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void store(std::string_view word, const int32_t* ids, size_t n) const {
    if (word.size() > kMaxWordBytes) return;
    Shard& shard = shard_of(word);
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.map.size() >= kShardCapacity) shard.map.clear();
    shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
  }

 private:
  static constexpr size_t kShards = 16, kShardCapacity = 4096;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  Shard& shard_of(std::string_view word) const { return shards_[std::hash<std::string_view>{}(word) % kShards]; }
  mutable Shard shards_[kShards];
};

}  // namespace stapo
