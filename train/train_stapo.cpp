// train_stapo: preference optimisation (StaPO and the one-sided baselines) on one GPU, bf16 CUDA engine
// (train/cuda_engine.h). Flags, data, losses, logs and checkpoints are train_stapo_cpu's (train/train_main.h);
// only the engine differs. MFU and peak device memory go into the step log and progress line
// (CudaEngine::step_report), to stderr every --report-every seconds, and into a summary at the end.
// The engine's agreement with the CPU reference is checked by the gpu-labelled tests (tests/train/
// test_cuda_engine.cpp; dev/gpu_check.sh runs them).
#include <memory>
#include <string>

#include "common/cli.h"         // defines: STAPO_PARSE_CLI, run_main
#include "common/error.h"       // defines: STAPO_CHECK
#include "train/collective.h"   // defines: distributed_env
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
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    // Several processes would each train alone; the engine's NCCL/ZeRO-1 part is not built yet.
    const stapo::DistributedEnv env = stapo::distributed_env();
    STAPO_CHECK(env.world_size == 1, env.launcher, " started ", env.world_size, " processes, but train_stapo does not "
                "train data parallel yet (the CUDA engine's NCCL/ZeRO-1 integration is pending, docs/distributed.md): "
                "run it as one process, or train_stapo_cpu under mpirun");
    // The CUDA engine sums response positions only: an NLL over prompt + response (orpo's default, TRL's ORPO)
    // is the CPU engine's for now. Refused here, before the reference pass and the model load.
    STAPO_CHECK(!stapo::loss_uses_prompt(stapo::loss_flags_config(app, flags.loss)),
                "train_stapo cannot train an NLL term over prompt + response yet (--nll-span prompt+response, the "
                "default of --loss orpo): pass --nll-span response (the NLL of the chosen response only), or train "
                "with train_stapo_cpu");
    options.attention = stapo::attention_path(attention);
    options.max_tokens = 2 * flags.loader.pairs_per_batch * flags.loader.row_length;
    options.seed = flags.trainer.seed;
    auto make_engine = [&](const std::string& dir) -> std::unique_ptr<stapo::Engine> {
      return std::make_unique<stapo::CudaEngine>(*stapo::model_load_hf<float>(dir), options);
    };
    auto summary = [](stapo::Engine& engine) {
      auto& cuda = static_cast<stapo::CudaEngine&>(engine);
      const stapo::CudaStepStats s = cuda.take_step_stats();
      if (s.steps > 0 && s.seconds > 0)
        fprintf(stderr, "device, whole run: %s\n", stapo::step_stats_summary(s, cuda.peak_tflops()).c_str());
    };
    stapo::train_run(app, flags, make_engine, summary);
  });
}
