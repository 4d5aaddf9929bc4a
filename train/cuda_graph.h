// --cuda-graph (StepPaths::cuda_graph): pieces of the training step captured into CUDA graphs and replayed, by
// train/graph_cache.h's policy (a key's work eager once, captured on its second occurrence, replayed after, at most
// kCudaGraphKeys keys per piece, the least recently used dropped).
//
// A captured piece must enqueue only device work on the one stream, with every host value it depends on in its
// key: no upload from host memory (the batch's uploads and AdamW's table go before it, as async copies from pinned
// buffers), no wait for the device, no allocation (the arenas are sized before: the first, eager run of a key
// makes what is lazy). Capture runs in cudaStreamCaptureModeThreadLocal, so a forbidden call in this thread fails
// the capture with an error naming the piece rather than being recorded wrongly.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <string>

#include "train/graph_cache.h"  // defines: GraphCache, GraphExecutor, GraphKey

namespace stapo {

constexpr size_t kCudaGraphKeys = 8;  // per piece: shapes of a run are few (fixed-shape batches: one)

// One piece of the step's work (`name`: "forward", "backward", ...) under --cuda-graph, on `stream`.
class CudaGraphs {
 public:
  CudaGraphs(const std::string& name, cudaStream_t stream, size_t capacity = kCudaGraphKeys);
  CudaGraphs(const CudaGraphs&) = delete;
  CudaGraphs& operator=(const CudaGraphs&) = delete;

  void run(const GraphKey& key, const std::function<void()>& work) { cache_.run(key, work); }
  void clear() { cache_.clear(); }  // the buffers the graphs read were freed
  std::string summary() const { return cache_.summary(executor_.name); }

 private:
  // CUDA stream capture into a cudaGraphExec_t (the handle GraphCache keeps).
  struct Executor : GraphExecutor {
    std::string name;
    cudaStream_t stream;
    void run(const std::function<void()>& work) override { work(); }
    void* capture(const std::function<void()>& work) override;
    void launch(void* graph) override;
    void destroy(void* graph) override;  // never throws: called from destructors
  };
  Executor executor_;  // before cache_, which destroys its graphs through it
  GraphCache cache_;
};

// `work` through `graphs` under --cuda-graph, else (null) as it is.
inline void run_graphed(CudaGraphs* graphs, const GraphKey& key, const std::function<void()>& work) {
  if (graphs)
    graphs->run(key, work);
  else
    work();
}

}  // namespace stapo
