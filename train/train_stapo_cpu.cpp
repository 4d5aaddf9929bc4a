// train_stapo_cpu: preference optimisation (StaPO and the one-sided baselines) on the fp32 CPU reference
// model. Flags, data, the reference pass, resume and the loop are train/train_main.h's, shared with the CUDA
// train_stapo; this file adds the thread count and the moments' storage (--moments) and says how a checkpoint
// directory becomes a CPU engine.
// Started by mpirun (or srun --mpi=pmix) it trains data parallel over MPI (docs/distributed.md).
#include <omp.h>

#include <memory>

#include "common/cli.h"          // defines: STAPO_PARSE_CLI, run_main
#include "train/collective.h"    // defines: collective_open_host, distributed_env
#include "train/cpu_engine.h"    // defines: CpuEngine
#include "train/train_main.h"    // defines: TrainFlags, train_flags_add, train_run

int main(int argc, char** argv) {
  CLI::App app{"train_stapo_cpu: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), fp32 CPU"};
  app.name("train_stapo_cpu");
  stapo::TrainFlags flags;
  int threads = 0;
  std::string moments = "fp32";
  stapo::train_flags_add(app, flags);
  stapo::cli_add_threads(app, threads, "OpenMP threads (0: OpenMP's default); fix it for bitwise-exact resumes");
  app.add_option("--moments", moments,
                 "AdamW moments: fp32 (default) or 8bit (block-wise 8-bit, Dettmers et al. 2022: the GPU kernel's "
                 "CPU twin; not with --zero 1 over several ranks)")
      ->check(CLI::IsMember({"fp32", "8bit"}));
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    const std::unique_ptr<stapo::Collective> ranks = stapo::collective_open_host(stapo::distributed_env());
    if (ranks->rank() == 0)
      fprintf(stderr, "%d OpenMP threads%s\n", omp_get_max_threads(),
              ranks->world_size() > 1 ? stapo::cat(" per rank, ", ranks->world_size(), " ranks (MPI)").c_str() : "");
    const bool zero1 = flags.zero == 1;
    const stapo::MomentKind kind = moments == "8bit" ? stapo::MomentKind::q8 : stapo::MomentKind::fp32;
    stapo::train_run(
        app, flags,
        [&](const std::string& dir) -> std::unique_ptr<stapo::Engine> {
          return std::make_unique<stapo::CpuEngine<float>>(stapo::model_load_hf<float>(dir), ranks.get(), zero1,
                                                           kind);
        },
        nullptr, ranks.get());
  });
}
