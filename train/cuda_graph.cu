// --cuda-graph's CUDA side (train/cuda_graph.h): stream capture, launch and release of the graphs.
#include "train/cuda_graph.h"

#include <cstdio>

#include "kernels/cuda_common.h"

namespace stapo {

CudaGraphs::CudaGraphs(const std::string& name, cudaStream_t stream, size_t capacity)
    : executor_(), cache_(executor_, capacity) {
  executor_.name = name;
  executor_.stream = stream;
}

void* CudaGraphs::Executor::capture(const std::function<void()>& work) {
  // Ends a capture that failed part way, so that the stream is usable again; the error goes with the exception.
  auto abandon = [&] {
    cudaGraph_t partial = nullptr;
    (void)cudaStreamEndCapture(stream, &partial);
    if (partial) (void)cudaGraphDestroy(partial);
    (void)cudaGetLastError();
  };
  const char* advice = "something in it waits for the device, allocates or reads host memory; run without "
                       "--cuda-graph (and report it: train/cuda_graph.h lists what a captured piece may not do)";
  cudaCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    work();
  } catch (const Error& e) {
    abandon();
    fail("--cuda-graph: capturing the ", name, " failed: ", e.what(), "; ", advice);
  } catch (...) {
    abandon();
    throw;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess) {
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    fail("--cuda-graph: capturing the ", name, " failed (", cudaGetErrorString(ended), "): ", advice);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
  cudaCheck(made);
  return exec;
}

void CudaGraphs::Executor::launch(void* graph) {
  cudaCheck(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream));
}

void CudaGraphs::Executor::destroy(void* graph) {
  const cudaError_t err = cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
  if (err != cudaSuccess)
    fprintf(stderr, "warning: releasing a CUDA graph of the %s: %s\n", name.c_str(), cudaGetErrorString(err));
}

}  // namespace stapo
