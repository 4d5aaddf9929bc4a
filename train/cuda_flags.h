// The CUDA engine's kernel-choice flags, shared by train_stapo and dev/bench/gpu_step so that the benchmark times
// exactly what the trainer runs: --attention and the StepPaths switches (train/cuda_model.h).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "train/cuda_model.h"  // defines: StepPaths, AttentionPath

namespace stapo {

// --attention into `name` (its default: flash2, the tensor-core kernels, measured 1.6x faster per step than the
// SIMT ones on an H200; docs/benchmarks.md).
inline void add_attention_option(CLI::App& app, std::string& name) {
  name = "flash2";
  app.add_option("--attention", name,
                 "attention kernels: flash2 (ours on tensor cores, FlashAttention-2's design; default), "
                 "flash2-atomic (the same with FlashAttention-2's atomic backward: dq accumulated in fp32 with atomic "
                 "adds, 5 tile products instead of 7, dq's last bits vary run to run; on an H200 no faster), "
                 "flash2-narrow (the same kernels streaming 32-row tiles: fewer registers, more blocks per SM, "
                 "twice the steps; not yet timed), flash (ours, SIMT, slower) or cudnn (cuDNN's fused SDPA, for "
                 "comparison: builds with cuDNN only, one sequence per row, so no --pack)")
      ->check(CLI::IsMember({"flash2", "flash2-atomic", "flash2-narrow", "flash", "cudnn"}));
}

// The StepPaths switches. The four on by default (measured on an H200, docs/benchmarks.md) take --no-NAME to run the
// baseline code instead; the others are off until given.
inline void add_step_path_flags(CLI::App& app, StepPaths& paths) {
  app.add_flag("--grad-first-write,!--no-grad-first-write", paths.grad_first_write, "default on: the step's first "
               "backward writes the gradients instead of a memset before it (train/cuda_model.h)");
  app.add_flag("--rmsnorm-warp,!--no-rmsnorm-warp", paths.rmsnorm_warp, "default on: RMSNorm backward with one warp "
               "per row where the hidden size is at most 2048 (kernels/rmsnorm.h; off: one block per row)");
  app.add_flag("--device-embedding-index,!--no-device-embedding-index", paths.device_embedding_index, "default on: "
               "build the embedding gradient's index on the device (kernels/embedding.h; off: sorted on the host and "
               "uploaded)");
  app.add_flag("--adamw-multi-tensor,!--no-adamw-multi-tensor", paths.adamw_multi_tensor, "default on: AdamW as one "
               "launch over a table of every tensor (kernels/adamw_compact.h; off: a launch per tensor)");
  app.add_flag("--matmul-autotune", paths.matmul_autotune, "time the cuBLASLt heuristic's first 8 algorithms per "
               "shape once and keep the fastest (kernels/matmul.h; the last bits may then differ between runs)");
  app.add_flag("--fused-projections", paths.fused_projections, "one GEMM for each layer's q, k, v projections and one "
               "for gate and up, forward and backward (train/cuda_model.h; off: a GEMM per projection)");
  app.add_flag("--cuda-graph", paths.cuda_graph, "capture the model's forward and backward of a micro-batch and the "
               "optimizer's norm and AdamW into CUDA graphs per shape, replayed when the shape repeats (train/"
               "cuda_graph.h; implies --device-embedding-index and --adamw-multi-tensor; not with --phases, "
               "--attention cudnn or data parallel)");
}

}  // namespace stapo
