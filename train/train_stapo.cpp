// train_stapo: preference optimisation (StaPO and the one-sided baselines) on one GPU, bf16 CUDA engine
// (train/cuda_engine.h), or data parallel on several, one process per GPU, started by mpirun or srun (NCCL,
// ZeRO-1: train/cuda_zero.h, docs/distributed.md). Flags, data, losses, logs and checkpoints are
// train_stapo_cpu's (train/train_main.h); only the engine differs. MFU and peak device memory go into the step
// log and progress line (CudaEngine::step_report; rank 0's under data parallel), to stderr every --report-every
// seconds, and into a summary at the end.
// The engine's agreement with the CPU reference is checked by the gpu-labelled tests (tests/train/
// test_cuda_engine.cpp; dev/gpu_check.sh runs them).
#include <memory>
#include <string>

#include "common/cli.h"         // defines: STAPO_PARSE_CLI, run_main
#include "common/error.h"       // defines: STAPO_CHECK
#include "train/collective.h"   // defines: distributed_env
#include "train/collective_nccl.h"  // defines: collective_nccl, NcclOptions
#include "train/cuda_engine.h"  // defines: CudaEngine, CudaEngineOptions
#include "train/train_main.h"   // defines: TrainFlags, train_flags_add, train_run

int main(int argc, char** argv) {
  CLI::App app{"train_stapo: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), bf16 CUDA"};
  app.name("train_stapo");
  stapo::TrainFlags flags;
  stapo::CudaEngineOptions options;
  options.report_every_s = 30;
  stapo::train_flags_add(app, flags);
  app.add_flag("--bf16-params", options.bf16_params,
               "keep no fp32 master weights: AdamW updates the bf16 weights with stochastic rounding (less memory)");
  app.add_option("--recompute", options.recompute,
                 "activations recomputed in backward: 0 none, 1 RMSNorm outputs and SwiGLU (default), 2 every "
                 "layer's forward (least memory)")
      ->check(CLI::Range(0, 2));
  std::string attention = "flash";
  app.add_option("--attention", attention,
                 "attention kernels: flash (ours, SIMT, default), flash2 (ours on tensor cores, FlashAttention-2's "
                 "design) or cudnn (cuDNN's fused SDPA, for comparison: builds with cuDNN only, one sequence per "
                 "row, so no --pack)")
      ->check(CLI::IsMember({"flash", "flash2", "cudnn"}));
  app.add_option("--peak-tflops", options.peak_tflops,
                 "the card's dense bf16 peak for MFU (default: known from the device name, e.g. H100 989)");
  app.add_option("--report-every", options.report_every_s, "seconds between MFU / memory lines (0: off)");
  stapo::NcclOptions nccl;
  app.add_option("--rendezvous", nccl.rendezvous_dir,
                 "data parallel without MPI (srun without PMIx): a directory every node sees, where rank 0 leaves the "
                 "NCCL id for the others (docs/distributed.md)");
  app.add_option("--collective-timeout", nccl.timeout_s,
                 "data parallel: seconds a rank waits for the others (the NCCL id, a collective) before it ends "
                 "the job")
      ->check(CLI::PositiveNumber);
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    // Several processes: one GPU each (the local rank's), NCCL between them; the collective exists before any
    // engine, which runs on the device it chose.
    const stapo::DistributedEnv env = stapo::distributed_env();
    const std::unique_ptr<stapo::Collective> ranks = env.world_size > 1 ? stapo::collective_nccl(env, nccl) : nullptr;
    options.data_parallel = ranks.get();
    options.zero1 = flags.zero == 1;
    const bool writer = !ranks || ranks->rank() == 0;
    if (!writer) options.report_every_s = 0;  // rank 0 speaks for the job
    options.attention = stapo::attention_path(attention);
    options.max_tokens = 2 * flags.loader.pairs_per_batch * flags.loader.row_length;
    options.seed = flags.trainer.seed;
    auto make_engine = [&](const std::string& dir) -> std::unique_ptr<stapo::Engine> {
      return std::make_unique<stapo::CudaEngine>(*stapo::model_load_hf<float>(dir), options);
    };
    auto summary = [&](stapo::Engine& engine) {
      auto& cuda = static_cast<stapo::CudaEngine&>(engine);
      const stapo::CudaStepStats s = cuda.take_step_stats();
      if (writer && s.steps > 0 && s.seconds > 0)
        fprintf(stderr, "device, whole run: %s\n", stapo::step_stats_summary(s, cuda.peak_tflops()).c_str());
    };
    stapo::train_run(app, flags, make_engine, summary, ranks.get());
  });
}
