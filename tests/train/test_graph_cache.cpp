// --cuda-graph's cache policy (train/graph_cache.h) with a fake executor that behaves as CUDA's stream capture does:
// work enqueues "launches" (strings with their arguments); run() puts them on the fake device at once, capture()
// records them into a graph without running any, launch() puts a graph's recorded launches on the device. So a
// replay repeats the arguments of the capture, whatever the host holds by then.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"
#include "train/graph_cache.h"

namespace stapo {
namespace {

class FakeExecutor : public GraphExecutor {
 public:
  std::vector<std::string> device;  // every launch the device ran, in order
  int created = 0, destroyed = 0;

  // What a piece of work calls for each kernel it would launch.
  void enqueue(const std::string& launch) {
    if (recording_)
      recording_->push_back(launch);
    else
      device.push_back(launch);
  }
  void run(const std::function<void()>& work) override { work(); }
  void* capture(const std::function<void()>& work) override {
    auto graph = std::make_unique<std::vector<std::string>>();
    recording_ = graph.get();
    try {
      work();
    } catch (...) {
      recording_ = nullptr;  // as cudaStreamEndCapture after a failure: the stream is no longer capturing
      throw;
    }
    recording_ = nullptr;
    created++;
    live_.push_back(graph.get());
    return graph.release();
  }
  void launch(void* graph) override {
    ASSERT_TRUE(is_live(graph)) << "launch of a destroyed graph";
    const auto* launches = static_cast<std::vector<std::string>*>(graph);
    device.insert(device.end(), launches->begin(), launches->end());
  }
  void destroy(void* graph) override {
    ASSERT_TRUE(is_live(graph)) << "graph destroyed twice";
    live_.erase(std::find(live_.begin(), live_.end(), graph));
    delete static_cast<std::vector<std::string>*>(graph);
    destroyed++;
  }
  bool capturing() const { return recording_ != nullptr; }

 private:
  bool is_live(void* graph) const { return std::find(live_.begin(), live_.end(), graph) != live_.end(); }
  std::vector<std::string>* recording_ = nullptr;
  std::vector<void*> live_;
};

GraphKey key(std::vector<int64_t> values) { return GraphKey{std::move(values)}; }

TEST(GraphKey, EqualityIsElementwiseAndOrdered) {
  EXPECT_EQ(key({3, 32, 57}), key({3, 32, 57}));
  EXPECT_NE(key({3, 32, 57}), key({3, 32, 58}));
  EXPECT_NE(key({3, 32, 57}), key({32, 3, 57}));
  EXPECT_NE(key({3, 32}), key({3, 32, 0}));  // a missing value is not a zero
  EXPECT_EQ(key({}), key({}));
  EXPECT_EQ(key({3, -1, 57}).text(), "(3, -1, 57)");
  EXPECT_EQ(key({}).text(), "()");
}

TEST(GraphCache, EagerThenCaptureThenReplay) {
  FakeExecutor fake;
  GraphCache cache(fake, 8);
  int runs_of_host_code = 0;
  auto work = [&] {
    runs_of_host_code++;
    fake.enqueue("embedding");
    fake.enqueue("matmul 96x64");
  };
  const std::vector<GraphAction> expected = {GraphAction::eager, GraphAction::capture, GraphAction::replay,
                                             GraphAction::replay};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(cache.run(key({3, 32}), work), expected[i]) << "occurrence " << i + 1;
    EXPECT_FALSE(fake.capturing());
    // Whatever the cache did, the device ran the work's launches once more: the capture itself runs none.
    ASSERT_EQ(fake.device.size(), 2 * (i + 1)) << "occurrence " << i + 1;
    EXPECT_EQ(fake.device[2 * i], "embedding");
    EXPECT_EQ(fake.device[2 * i + 1], "matmul 96x64");
  }
  EXPECT_EQ(runs_of_host_code, 2) << "the eager run and the capture; replays run no host code";
  EXPECT_EQ(fake.created, 1);
  EXPECT_EQ(cache.stats().eager, 1);
  EXPECT_EQ(cache.stats().captured, 1);
  EXPECT_EQ(cache.stats().replays, 2);
  EXPECT_EQ(cache.stats().evicted, 0);
  EXPECT_EQ(cache.summary("forward"), "forward: 1 captured, 2 replays, 1 eager runs, 0 evicted (at most 8 keys)");
}

// Why the key must hold every host value a launch depends on: a replay repeats the captured arguments.
TEST(GraphCache, ReplayRepeatsTheCapturedArguments) {
  FakeExecutor fake;
  GraphCache cache(fake, 8);
  int rows = 3;
  auto work = [&] { fake.enqueue("rows " + std::to_string(rows)); };
  cache.run(key({0}), work);
  cache.run(key({0}), work);  // captured with rows 3
  rows = 4;                   // not in the key: the replay still launches for 3
  cache.run(key({0}), work);
  cache.run(key({rows}), work);  // in the key: a new key, eager
  EXPECT_EQ(fake.device, (std::vector<std::string>{"rows 3", "rows 3", "rows 3", "rows 4"}));
}

TEST(GraphCache, KeysAreIndependent) {
  FakeExecutor fake;
  GraphCache cache(fake, 8);
  auto work_for = [&](int n) { return [&fake, n] { fake.enqueue("n " + std::to_string(n)); }; };
  EXPECT_EQ(cache.run(key({1}), work_for(1)), GraphAction::eager);
  EXPECT_EQ(cache.run(key({2}), work_for(2)), GraphAction::eager);
  EXPECT_EQ(cache.run(key({1}), work_for(1)), GraphAction::capture);
  EXPECT_EQ(cache.run(key({2}), work_for(2)), GraphAction::capture);
  EXPECT_EQ(cache.run(key({1}), work_for(1)), GraphAction::replay);
  EXPECT_EQ(cache.run(key({2}), work_for(2)), GraphAction::replay);
  EXPECT_EQ(fake.device, (std::vector<std::string>{"n 1", "n 2", "n 1", "n 2", "n 1", "n 2"}));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(GraphCache, LeastRecentlyUsedKeyIsEvicted) {
  FakeExecutor fake;
  GraphCache cache(fake, 2);
  auto work = [&] { fake.enqueue("k"); };
  cache.run(key({1}), work);  // eager
  cache.run(key({1}), work);  // captured
  cache.run(key({2}), work);  // eager; keys 2, 1
  cache.run(key({1}), work);  // replay; keys 1, 2
  EXPECT_EQ(cache.run(key({3}), work), GraphAction::eager);  // evicts 2 (seen once: no graph to destroy)
  EXPECT_EQ(cache.stats().evicted, 1);
  EXPECT_EQ(fake.destroyed, 0);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.run(key({1}), work), GraphAction::replay) << "the recently used key survives";
  EXPECT_EQ(cache.run(key({2}), work), GraphAction::eager) << "the evicted key starts over";  // evicts 3
  EXPECT_EQ(cache.run(key({4}), work), GraphAction::eager);  // evicts 1, whose graph goes
  EXPECT_EQ(cache.stats().evicted, 3);
  EXPECT_EQ(fake.destroyed, 1);
  EXPECT_EQ(cache.run(key({1}), work), GraphAction::eager) << "an evicted captured key starts over";
  EXPECT_EQ(cache.summary("backward"), "backward: 1 captured, 2 replays, 6 eager runs, 4 evicted (at most 2 keys)");
}

TEST(GraphCache, CapacityOfOneAlternatingKeysNeverCaptures) {
  FakeExecutor fake;
  GraphCache cache(fake, 1);
  auto work = [&] { fake.enqueue("k"); };
  for (int i = 0; i < 6; ++i) EXPECT_EQ(cache.run(key({i % 2}), work), GraphAction::eager) << i;
  EXPECT_EQ(fake.created, 0);
  EXPECT_EQ(cache.stats().evicted, 5);
  EXPECT_EQ(fake.device.size(), 6u);
}

TEST(GraphCache, FailedCaptureIsRetriedAndRethrown) {
  FakeExecutor fake;
  GraphCache cache(fake, 8);
  bool fail_now = false;
  auto work = [&] {
    fake.enqueue("before");
    if (fail_now) fail("a synchronisation inside the capture");
    fake.enqueue("after");
  };
  EXPECT_EQ(cache.run(key({7}), work), GraphAction::eager);
  fail_now = true;
  EXPECT_THROW(cache.run(key({7}), work), Error);
  EXPECT_FALSE(fake.capturing());
  EXPECT_EQ(fake.device.size(), 2u) << "the failed capture ran nothing";
  EXPECT_EQ(cache.stats().captured, 0);
  fail_now = false;
  EXPECT_EQ(cache.run(key({7}), work), GraphAction::capture) << "seen once still: captured on the next occurrence";
  EXPECT_EQ(fake.device.size(), 4u);
}

TEST(GraphCache, ClearAndDestructionDestroyEveryGraph) {
  FakeExecutor fake;
  {
    GraphCache cache(fake, 8);
    auto work = [&] { fake.enqueue("k"); };
    for (int k = 0; k < 3; ++k) {
      cache.run(key({k}), work);
      cache.run(key({k}), work);
    }
    EXPECT_EQ(fake.created, 3);
    cache.clear();
    EXPECT_EQ(fake.destroyed, 3);
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_EQ(cache.run(key({0}), work), GraphAction::eager) << "after clear every key starts over";
    cache.run(key({0}), work);
    EXPECT_EQ(fake.created, 4);
  }
  EXPECT_EQ(fake.destroyed, 4) << "the destructor destroys the graph left";
}

TEST(GraphCache, RefusesNoCapacity) {
  FakeExecutor fake;
  EXPECT_THROW(GraphCache(fake, 0), Error);
}

}  // namespace
}  // namespace stapo
