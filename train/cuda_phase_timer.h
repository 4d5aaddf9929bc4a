// Per-phase timing of the CUDA engine's step with CUDA events (train/phase_timer.h names the phases). mark(p)
// records an event on the stream: the GPU time from there to the next mark (or stop) is p's. Nothing waits
// until collect(). Off unless a PhaseTimer is handed to CudaEngine::set_phase_timer (dev/bench/gpu_step
// --phases); the timed steps of gpu_step run without it, so the events cost them nothing.
#pragma once
#include <cuda_runtime.h>

#include <vector>

#include "train/phase_timer.h"

namespace stapo {

class PhaseTimer {
 public:
  explicit PhaseTimer(cudaStream_t stream) : stream_(stream) {}
  ~PhaseTimer();
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

  void mark(Phase phase);
  void stop();  // ends the last interval; the next mark starts a new step
  // Waits for the recorded events, adds each stopped step to the totals and returns them; the events are reused.
  PhaseTotals collect();

 private:
  cudaEvent_t event(size_t i);

  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;  // a pool, reused across steps
  struct Step {
    size_t first;                // index of its first event
    std::vector<Phase> phases;   // interval i runs from event first+i to first+i+1
    bool stopped = false;
  };
  std::vector<Step> steps_;
  size_t used_ = 0;
  PhaseTotals totals_;
};

}  // namespace stapo
