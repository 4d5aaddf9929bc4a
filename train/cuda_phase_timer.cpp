#include "train/cuda_phase_timer.h"

#include "kernels/cuda_common.h"  // defines: cudaCheck

namespace stapo {

PhaseTimer::~PhaseTimer() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

cudaEvent_t PhaseTimer::event(size_t i) {
  while (events_.size() <= i) {
    cudaEvent_t e;
    cudaCheck(cudaEventCreate(&e));
    events_.push_back(e);
  }
  return events_[i];
}

void PhaseTimer::mark(Phase phase) {
  if (steps_.empty() || steps_.back().stopped) steps_.push_back({used_, {}});
  cudaCheck(cudaEventRecord(event(used_++), stream_));
  steps_.back().phases.push_back(phase);
}

void PhaseTimer::stop() {
  STAPO_CHECK(!steps_.empty() && !steps_.back().stopped, "PhaseTimer::stop without a mark since the last stop");
  cudaCheck(cudaEventRecord(event(used_++), stream_));
  steps_.back().stopped = true;
}

PhaseTotals PhaseTimer::collect() {
  for (const Step& s : steps_) {
    STAPO_CHECK(s.stopped, "PhaseTimer::collect: a step was marked but not stopped");
    cudaCheck(cudaEventSynchronize(events_[s.first + s.phases.size()]));
    std::vector<float> elapsed(s.phases.size());
    for (size_t i = 0; i < s.phases.size(); ++i)
      cudaCheck(cudaEventElapsedTime(&elapsed[i], events_[s.first + i], events_[s.first + i + 1]));
    add_step(totals_, s.phases, elapsed);
  }
  steps_.clear();
  used_ = 0;
  return totals_;
}

}  // namespace stapo
