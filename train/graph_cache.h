// The policy of --cuda-graph (train/cuda_graph.h), as plain host code: which recorded piece of work runs eagerly,
// which is captured and which replayed, keyed by what determines every launch in it.
//
// A piece of the step (the model's forward, its backward, the optimizer's norm and its AdamW) enqueues the same
// launches with the same arguments whenever its key is the same: the shapes (tokens, rows, T, lm_head rows, ...),
// the flags that change which kernels run (the step's first backward), and the device addresses it reads that may
// change (a regrown buffer). GraphCache runs a key's work eagerly the first time it is seen (so that what is
// lazily created — cuBLASLt plans, their autotuning, workspaces — is created outside a capture), captures it on
// its second occurrence and launches the capture, and replays that capture from then on. At most `capacity` keys
// are kept, the least recently used dropped first (its graph destroyed).
//
// The executor does the device work: CUDA's (train/cuda_graph.h), or a test's fake.
#pragma once
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <vector>

namespace stapo {

// What determines every launch of a piece of work: integers in an order the caller fixes (pointers as integers).
struct GraphKey {
  std::vector<int64_t> values;
  bool operator==(const GraphKey& other) const { return values == other.values; }
  bool operator!=(const GraphKey& other) const { return !(*this == other); }
  std::string text() const;  // "(3, 32, 57, 0)"
};

// Runs, records and replays work for a GraphCache; a recorded graph is an opaque handle it gives out.
class GraphExecutor {
 public:
  virtual ~GraphExecutor() = default;
  virtual void run(const std::function<void()>& work) = 0;       // as it is
  virtual void* capture(const std::function<void()>& work) = 0;  // records work without running it
  virtual void launch(void* graph) = 0;                          // runs a recorded graph once
  virtual void destroy(void* graph) = 0;
};

// What GraphCache::run did with a call.
enum class GraphAction { eager, capture, replay };

struct GraphCacheStats {
  int64_t eager = 0;     // first occurrences, run as they are
  int64_t captured = 0;  // second occurrences: captured, then launched
  int64_t replays = 0;   // later occurrences: the capture launched again
  int64_t evicted = 0;   // keys dropped to keep at most `capacity`
};

class GraphCache {
 public:
  // capacity ≥ 1 keys (checked).
  GraphCache(GraphExecutor& executor, size_t capacity);
  ~GraphCache();  // destroys every graph
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  // Runs `work` for `key`: eagerly the first time, captured and launched the second, replayed after. A capture
  // that throws leaves the key as seen once (the next occurrence tries again) and rethrows.
  GraphAction run(const GraphKey& key, const std::function<void()>& work);
  // Forgets every key (the addresses the graphs read are gone: a regrown arena); destroys their graphs.
  void clear();
  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }
  const GraphCacheStats& stats() const { return stats_; }
  // "forward: 2 captured, 118 replays, 3 eager runs, 0 evicted (at most 8 keys)"
  std::string summary(const std::string& name) const;

 private:
  struct Entry {
    GraphKey key;
    void* graph = nullptr;  // null: seen once, run eagerly
  };
  GraphExecutor& executor_;
  size_t capacity_;
  std::list<Entry> entries_;  // most recently used first
  GraphCacheStats stats_;
};

}  // namespace stapo
