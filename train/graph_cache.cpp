// --cuda-graph's cache policy (train/graph_cache.h).
#include "train/graph_cache.h"

#include "common/error.h"

namespace stapo {

std::string GraphKey::text() const {
  std::string out = "(";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + ")";
}

GraphCache::GraphCache(GraphExecutor& executor, size_t capacity) : executor_(executor), capacity_(capacity) {
  STAPO_CHECK(capacity >= 1, "GraphCache: a capacity of ", capacity, " keys; at least 1 is needed");
}

GraphCache::~GraphCache() { clear(); }

void GraphCache::clear() {
  for (Entry& e : entries_)
    if (e.graph) executor_.destroy(e.graph);
  entries_.clear();
}

GraphAction GraphCache::run(const GraphKey& key, const std::function<void()>& work) {
  auto it = entries_.begin();
  while (it != entries_.end() && it->key != key) ++it;
  if (it == entries_.end()) {  // first occurrence: eagerly, remembered as seen
    if (entries_.size() == capacity_) {
      if (entries_.back().graph) executor_.destroy(entries_.back().graph);
      entries_.pop_back();
      stats_.evicted++;
    }
    entries_.push_front(Entry{key, nullptr});
    executor_.run(work);
    stats_.eager++;
    return GraphAction::eager;
  }
  entries_.splice(entries_.begin(), entries_, it);  // most recently used
  Entry& e = entries_.front();
  if (e.graph) {
    executor_.launch(e.graph);
    stats_.replays++;
    return GraphAction::replay;
  }
  e.graph = executor_.capture(work);  // throws: the key stays seen once
  stats_.captured++;
  executor_.launch(e.graph);
  return GraphAction::capture;
}

std::string GraphCache::summary(const std::string& name) const {
  return cat(name, ": ", stats_.captured, " captured, ", stats_.replays, " replays, ", stats_.eager, " eager runs, ",
             stats_.evicted, " evicted (at most ", capacity_, " keys)");
}

}  // namespace stapo
