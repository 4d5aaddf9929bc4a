// train_stapo_cpu: preference optimisation (StaPO and the one-sided baselines) on the fp32 CPU reference
// model. Flags, data, the reference pass, resume and the loop are train/train_main.h's, shared with the CUDA
// train_stapo; this file adds the thread count and says how a checkpoint directory becomes a CPU engine.
#include <omp.h>

#include <memory>

#include "common/cli.h"          // defines: STAPO_PARSE_CLI, run_main
#include "train/cpu_engine.h"    // defines: CpuEngine
#include "train/train_main.h"    // defines: TrainFlags, train_flags_add, train_run

int main(int argc, char** argv) {
  CLI::App app{"train_stapo_cpu: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), fp32 CPU"};
  app.name("train_stapo_cpu");
  stapo::TrainFlags flags;
  int threads = 0;
  stapo::train_flags_add(app, flags);
  stapo::cli_add_threads(app, threads, "OpenMP threads (0: OpenMP's default); fix it for bitwise-exact resumes");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    fprintf(stderr, "%d OpenMP threads\n", omp_get_max_threads());
    stapo::train_run(app, flags, [](const std::string& dir) -> std::unique_ptr<stapo::Engine> {
      return std::make_unique<stapo::CpuEngine<float>>(stapo::model_load_hf<float>(dir));
    });
  });
}
