// train_stapo: preference optimisation (StaPO and the one-sided baselines) on one GPU, bf16 CUDA engine
// (train/cuda_engine.h), or data parallel on several, one process per GPU, started by mpirun or srun (NCCL,
// ZeRO-1: train/cuda_zero.h, docs/distributed.md). Flags, data, losses, logs and checkpoints are
// train_stapo_cpu's (train/train_main.h); only the engine differs. MFU and peak device memory go into the step
// log and progress line (CudaEngine::step_report; rank 0's under data parallel), to stderr every --report-every
// seconds, and into a summary at the end.
// Before anything is allocated (or the model loaded) the device memory plan (train/memory_plan.h; one GPU's, under
// data parallel) is printed and compared with the device's free memory (at most --memory-cap-gib): a
// configuration that cannot fit is refused with the cheapest flags that would make it fit. --dry-run prints the
// plan and exits, without a device (under mpirun/srun: the plan of one rank of that world size).
// The engine's agreement with the CPU reference is checked by the gpu-labelled tests (tests/train/
// test_cuda_engine.cpp; dev/gpu_check.sh runs them).
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "common/cli.h"         // defines: STAPO_PARSE_CLI, run_main
#include "common/error.h"       // defines: STAPO_CHECK
#include "train/collective.h"   // defines: distributed_env
#include "model/config.h"       // defines: config_load
#include "train/collective_nccl.h"  // defines: collective_nccl, NcclOptions
#include "train/cuda_engine.h"  // defines: CudaEngine, CudaEngineOptions, cuda_engine_plan_input
#include "train/cuda_flags.h"   // defines: add_attention_option, add_step_path_flags
#include "train/memory_plan.h"  // defines: memory_plan, memory_plan_table, memory_plan_fit
#include "train/train_main.h"   // defines: TrainFlags, train_flags_add, train_run

namespace {

// Prints the plan for the model's config and the flags (one rank's of `ranks`), and returns whether to train (not
// with --dry-run). Resolves --recompute auto (options.recompute < 0) to the least recomputation that fits, level 1
// where none does or nothing is known to compare with. Refuses flags data parallel does not take (--cuda-graph
// among them), --fused-projections where the model's tensor sizes do not allow it, and a plan larger than the
// device's free memory or the cap (--dry-run: the cap alone), naming the cheapest flags that fit.
bool plan_fits(stapo::CudaEngineOptions& options, const stapo::TrainFlags& flags, bool dry_run, int ranks,
               bool print) {
  const stapo::ModelConfig config = stapo::config_load(flags.model_dir + "/config.json");
  const int pairs = flags.loader.pairs_per_batch, T = flags.loader.row_length;
  // --dry-run compares with the cap alone (none without one); a run with what the device has free, which is 0 when
  // the cap is below what is already in use (the CUDA context): refused below, not taken for "no cap".
  const uint64_t available =
      dry_run ? options.memory_cap_bytes : stapo::cuda_engine_available_bytes(options.memory_cap_bytes);
  const bool compare = !dry_run || options.memory_cap_bytes > 0;
  const bool recompute_auto = options.recompute < 0;
  if (recompute_auto) options.recompute = 1;  // the plan's input needs a level; the choice is below
  stapo::MemoryPlanInput in = stapo::cuda_engine_plan_input(config, options, pairs, T);
  in.grad_accum = flags.trainer.grad_accum;
  in.ranks = ranks;  // --dry-run has no collective: the world size of mpirun/srun's environment
  if (recompute_auto) {
    const std::optional<int> level =
        compare ? stapo::memory_plan_recompute_auto(config, in, available) : std::nullopt;
    options.recompute = in.recompute = level.value_or(1);
    if (print)
      fprintf(stderr, "--recompute auto: %s\n",
              level       ? stapo::cat(*level, ", the least recomputation whose plan fits").c_str()
              : compare   ? "no level fits; the plan below is level 1's"
                          : "without a device or --memory-cap-gib to compare with, the plan below is level 1's (a "
                            "run takes the least recomputation that fits)");
  }
  const std::string refused = stapo::data_parallel_unsupported(in);
  if (!refused.empty()) stapo::fail(refused);
  if (ranks > 1 && options.paths.cuda_graph)  // the engine refuses it too; a dry run under mpirun has no engine
    stapo::fail("--cuda-graph and data parallel over ", ranks, " ranks: the gradient reduction is not captured; drop "
                "--cuda-graph or run one process");
  if (options.paths.fused_projections) {
    const std::string why = stapo::fused_projections_unsupported(config, options.grads);
    if (!why.empty()) stapo::fail("--fused-projections: ", why);
  }
  const stapo::MemoryPlan plan = stapo::memory_plan(config, in);
  if (print)
    fprintf(stderr, "device memory plan (train/memory_plan.h; %d pairs x %d tokens per micro-batch%s):\n%s", pairs, T,
            ranks > 1 ? stapo::cat(", one GPU of ", ranks).c_str() : "",
            stapo::memory_plan_table(plan, available).c_str());
  if (!compare || plan.total() <= available) return !dry_run;
  if (available == 0)
    stapo::fail("--memory-cap-gib: a card of ", stapo::gib(options.memory_cap_bytes), " leaves nothing beyond what "
                "the device already holds (the CUDA context, other processes); give a larger cap");
  const auto fit = stapo::memory_plan_fit(config, in, available);
  const std::string need =
      stapo::cat("the plan needs ", stapo::gib(plan.total()), ", ", stapo::gib(available), " are available");
  if (!fit)
    stapo::fail(need, " and no choice of --master, --moments, --grads, --recompute and --batch-size fits: use a "
                "shorter --max-length or a larger device");
  stapo::fail(need, ": the cheapest flags that fit are ", stapo::memory_plan_flags(in, *fit), " (",
              stapo::gib(stapo::memory_plan(config, *fit).total()), "); rerun with them, or --dry-run to see the "
              "plan of others");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"train_stapo: align a Llama/Mistral checkpoint on preference pairs (StaPO and baselines), bf16 CUDA"};
  app.name("train_stapo");
  stapo::TrainFlags flags;
  stapo::CudaEngineOptions options;
  options.report_every_s = 30;
  stapo::train_flags_add(app, flags);
  std::string master = "fp32", moments = "fp32";
  app.add_option("--master", master,
                 "master weights: fp32 (default), split (the low 16 bits beside the bf16 weights: the fp32 master "
                 "exactly, the same numbers at half the memory) or none (bf16 weights, stochastic rounding)")
      ->check(CLI::IsMember({"fp32", "split", "none"}));
  bool bf16_params = false;
  app.add_flag("--bf16-params", bf16_params, "the same as --master none");
  app.add_option("--moments", moments,
                 "AdamW moments: fp32 (default) or 8bit (block-wise 8-bit with a dynamic map, Dettmers et al. 2022)")
      ->check(CLI::IsMember({"fp32", "8bit"}));
  std::string grads = "fp32";
  app.add_option("--grads", grads,
                 "parameter gradients: fp32 (default: micro-batches accumulate exactly) or bf16 (the layers' matmul "
                 "weights in bf16, the embedding, lm_head and RMSNorm weights fp32: 2 bytes less per parameter)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  double cap_gib = 0;
  app.add_option("--memory-cap-gib", cap_gib,
                 "behave as on a card of this much memory in all (GiB; the CUDA context counts): what is free "
                 "beyond it is reserved first, e.g. 79.6 for an 80 GB H100 on a larger card (0: no cap)")
      ->check(CLI::NonNegativeNumber);
  bool dry_run = false;
  app.add_flag("--dry-run", dry_run,
               "print the device memory plan for these flags and exit: reads only --model's config.json, needs no "
               "device");
  std::string recompute = "auto";
  app.add_option("--recompute", recompute,
                 "activations recomputed in backward: 0 none, 1 RMSNorm outputs and SwiGLU, 2 every layer's forward "
                 "(least memory), auto (default) the least of these whose memory plan fits the device (the same "
                 "gradients at every level)")
      ->check(CLI::IsMember({"auto", "0", "1", "2"}));
  std::string attention;
  stapo::add_attention_option(app, attention);
  stapo::add_step_path_flags(app, options.paths);
  app.add_option("--peak-tflops", options.peak_tflops,
                 "the card's dense bf16 peak for MFU (default: known from the device name, e.g. H100 989)");
  app.add_option("--report-every", options.report_every_s, "seconds between MFU / memory lines (0: off)");
  int zero_overlap = 0;
  app.add_option("--zero-overlap", zero_overlap,
                 "under data parallel: 1 reduces the gradients layer by layer during the step's last backward, on a "
                 "second stream; 0 (default until a multi-GPU run has validated 1) in one call after it")
      ->check(CLI::Range(0, 1));
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
    options.attention = stapo::attention_path(attention);
    options.recompute = recompute == "auto" ? -1 : std::stoi(recompute);  // -1: plan_fits chooses
    options.max_tokens = 2 * flags.loader.pairs_per_batch * flags.loader.row_length;
    options.seed = flags.trainer.seed;
    options.master = bf16_params ? stapo::MasterKind::none : stapo::master_from_name(master);
    options.moments = stapo::moments_from_name(moments);
    options.grads = stapo::grads_from_name(grads);
    options.memory_cap_bytes = (uint64_t)(cap_gib * double(1ull << 30));
    options.zero1 = flags.zero == 1;
    options.zero_overlap = zero_overlap == 1;
    const stapo::DistributedEnv env = stapo::distributed_env();
    if (dry_run) return (void)plan_fits(options, flags, true, env.world_size, true);  // no device, no collective
    // Several processes: one GPU each (the local rank's), NCCL between them; the collective exists before any
    // engine, which runs on the device it chose.
    const std::unique_ptr<stapo::Collective> ranks = env.world_size > 1 ? stapo::collective_nccl(env, nccl) : nullptr;
    options.data_parallel = ranks.get();
    const bool writer = !ranks || ranks->rank() == 0;
    if (!writer) options.report_every_s = 0;  // rank 0 speaks for the job
    // Each rank compares the plan with its own GPU's free memory, so one rank may refuse where the others go on: it
    // ends the job, as train_run does for later errors. Returning instead would leave the others in their first
    // collective (under mpirun MPI's barrier, with no timeout) and this rank in MPI_Finalize, waiting for them.
    try {
      plan_fits(options, flags, false, env.world_size, writer);
    } catch (const std::exception& e) {
      if (!ranks) throw;
      ranks->abort(e.what());
    }
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
