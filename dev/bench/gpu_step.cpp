// gpu_step: the time of one optimizer step of our GPU trainer on the benchmark config that
// dev/bench/torch_baseline.py also reads (dev/bench/gpu_step_config.json: a Llama-3.2-1B-shaped model with
// random weights, `pairs` pairs of `seq_len` tokens, the loss on the last seq_len − prompt_len targets; with
// `micro_batches` > 1, that many such micro-batches accumulate into each optimizer step).
// A step is exactly the trainer's: zero_grad, run_pairs (forward, the loss, backward),
// the gradient norm, clipping at 1, one AdamW update; timed with CUDA events on the engine's stream after
// `warmup_steps`, median of `steps` (or of as many as --min-seconds takes). Model FLOPs are train/model_flops.h's,
// the formula torch_baseline.py shares: the needed count (the lm_head on the response targets) for MFU, the
// all-token count beside it (mfu_all_tokens, the number reported before engine v2). MFU is against the config's peak for this device,
// peak memory is what the engine brought into use on the device (cudaMemGetInfo, the CUDA context excluded,
// like torch.cuda.max_memory_allocated), beside the planner's prediction (train/memory_plan.h) for the same
// configuration. A config's optional `engine` object sets train_stapo's engine flags (master, moments, grads,
// recompute: without it, auto as in train_stapo; the command line overrides them) and `memory_cap_gib` caps the
// device memory the engine may use (as --memory-cap-gib): a plan above the cap is refused, and an allocation past
// it fails as on the smaller card.
// --phases N then runs N more steps with a CUDA event at every phase boundary (train/cuda_phase_timer.h) and
// prints the per-phase table (ms per step, % of step; the same phase names as torch_baseline.py --phases), also
// as "phases_ms" in the JSON; the timed steps above run without those events.
//
//   build-gpu/dev/bench/gpu_step --config dev/bench/gpu_step_config.json --out result.json [--bf16-params]
//     [--master fp32|split|none] [--moments fp32|8bit] [--grads fp32|bf16] [--recompute 0|1|2|auto]
//     [--attention flash2|flash2-atomic|flash2-narrow|flash|cudnn] [--memory-cap-gib G] [--phases N] [--grad-first-write]
//     [--rmsnorm-warp] [--device-embedding-index] [--adamw-multi-tensor]
//     [--matmul-autotune] [--fused-projections] [--cuda-graph] [--min-seconds S] [--lm-head-chunk-rows R]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/cli.h"           // defines: STAPO_PARSE_CLI, run_main
#include "common/file_io.h"       // defines: read_text_file, write_file_atomic
#include "kernels/cuda_common.h"  // defines: cudaCheck, cuda_device_description
#include "model/config.h"         // defines: config_parse
#include "train/cuda_engine.h"      // defines: CudaEngine
#include "train/cuda_flags.h"       // defines: add_attention_option, add_step_path_flags
#include "train/cuda_phase_timer.h"  // defines: PhaseTimer
#include "train/memory_plan.h"    // defines: memory_plan, gib
#include "train/model_flops.h"    // defines: batch_flop_counts, batch_forward_flops_needed
#include "train/trainer.h"        // defines: run_micro_batches, MetricSums

namespace {

// Every row one sequence of seq_len random tokens; sequence 2i chosen, 2i+1 rejected; the response is the last
// seq_len − prompt_len tokens (the targets at positions prompt_len − 1 .. seq_len − 2), as in torch_baseline.py.
stapo::PairBatch bench_batch(int pairs, int seq_len, int prompt_len, int V) {
  STAPO_CHECK(pairs > 0 && prompt_len >= 1 && prompt_len < seq_len, "benchmark batch: pairs = ", pairs,
              ", seq_len = ", seq_len, ", prompt_len = ", prompt_len, " (need 1 ≤ prompt_len < seq_len)");
  stapo::PairBatch b;
  stapo::TokenBatch& t = b.tokens;
  t.rows = 2 * pairs;
  t.T = seq_len;
  const size_t n = (size_t)t.rows * t.T;
  std::mt19937_64 rng(0);
  std::uniform_int_distribution<int> token(0, V - 1);
  t.tokens.resize(n);
  for (int32_t& x : t.tokens) x = token(rng);
  t.targets.assign(n, -1);
  t.positions.resize(n);
  t.segments.assign(n, 0);
  b.response_sequence.assign(n, -1);
  for (int r = 0; r < t.rows; ++r)
    for (int p = 0; p < seq_len; ++p) {
      const size_t i = (size_t)r * seq_len + p;
      t.positions[i] = p;
      if (p + 1 < seq_len) t.targets[i] = t.tokens[i + 1];
      if (p >= prompt_len - 1 && p + 1 < seq_len) b.response_sequence[i] = r;
    }
  b.num_pairs = pairs;
  for (int i = 0; i < pairs; ++i) b.pair_ids.push_back(i);
  b.response_length.assign(t.rows, seq_len - prompt_len);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpu_step: median optimizer-step time, tokens/s, MFU and peak memory of train_stapo's CUDA engine"};
  app.name("gpu_step");
  std::string config_path = "dev/bench/gpu_step_config.json", out_path;
  stapo::CudaEngineOptions options;
  app.add_option("--config", config_path, "the benchmark config shared with dev/bench/torch_baseline.py");
  app.add_option("--out", out_path, "also write the result JSON here");
  std::string master, moments, grads;
  std::string recompute;
  double cap_gib = -1;
  bool bf16_params = false;
  app.add_flag("--bf16-params", bf16_params, "bf16 weights with stochastic rounding, no fp32 master copy "
               "(--master none)");
  app.add_option("--master", master, "master weights fp32, split or none (train_stapo's; default: the config's "
                 "engine.master, else fp32)")->check(CLI::IsMember({"fp32", "split", "none"}));
  app.add_option("--moments", moments, "AdamW moments fp32 or 8bit (train_stapo's; default: the config's "
                 "engine.moments, else fp32)")->check(CLI::IsMember({"fp32", "8bit"}));
  app.add_option("--grads", grads, "gradients fp32 or bf16 (train_stapo's; default: the config's engine.grads, else "
                 "fp32)")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--recompute", recompute, "activation recomputation level 0, 1, 2 or auto (train_stapo's; default: "
                 "the config's engine.recompute, else auto: the least whose memory plan fits the device)")
      ->check(CLI::IsMember({"auto", "0", "1", "2"}));
  app.add_option("--memory-cap-gib", cap_gib, "device memory cap in GiB (default: the config's memory_cap_gib, "
                 "else none)")->check(CLI::NonNegativeNumber);
  app.add_option("--lm-head-chunk-rows", options.lm_head_chunk_rows,
                 "response rows per lm_head chunk (the engine's default 2048; its workspace grows with it): a "
                 "benchmark knob, not a train_stapo flag")
      ->check(CLI::Range(1, 1 << 20));
  std::string attention;
  stapo::add_attention_option(app, attention);
  stapo::add_step_path_flags(app, options.paths);
  int phase_steps = 0;
  app.add_option("--phases", phase_steps, "then N steps timed phase by phase (CUDA events; 0: none)")
      ->check(CLI::NonNegativeNumber);
  double min_seconds = 0;
  app.add_option("--min-seconds", min_seconds, "keep timing steps (beyond the config's timing.steps) until this many "
                 "seconds of timed steps have passed (an MFU claim: 60)")
      ->check(CLI::NonNegativeNumber);
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    options.attention = stapo::attention_path(attention);
    // Refused by the engine too, but only once the timed steps are done.
    STAPO_CHECK(phase_steps == 0 || !options.paths.cuda_graph, "--phases with --cuda-graph: the phase timer's events "
                "are not replayed by CUDA graphs; time the phases in a run without --cuda-graph");
    nlohmann::json bench;
    try {
      bench = nlohmann::json::parse(stapo::read_text_file(config_path));
    } catch (const nlohmann::json::exception& e) {
      stapo::fail(config_path, ": not valid JSON (", e.what(), ")");
    }
    const stapo::ModelConfig config = stapo::config_parse(bench.at("model").dump(), config_path + " (model)");
    const nlohmann::json& jb = bench.at("batch");
    const int pairs = jb.at("pairs"), seq_len = jb.at("seq_len"), prompt_len = jb.at("prompt_len");
    const int micro_batches = jb.value("micro_batches", 1);  // per optimizer step (gradient accumulation)
    STAPO_CHECK(micro_batches >= 1, config_path, ": batch.micro_batches must be at least 1");
    const nlohmann::json& jl = bench.at("loss");
    stapo::LossConfig loss = stapo::loss_defaults(stapo::loss_from_name(jl.at("name")));
    loss.reward = stapo::reward_from_name(jl.value("reward", stapo::reward_name(loss.reward)));
    loss.beta = jl.value("beta", loss.beta);
    loss.margin_left = jl.value("margin_left", loss.margin_left);
    loss.margin_right = jl.value("margin_right", loss.margin_right);
    loss.lambda_right = jl.value("lambda_right", loss.lambda_right);
    stapo::AdamWConfig adamw;
    const double lr = bench.at("optimizer").at("lr");
    adamw.weight_decay = bench.at("optimizer").value("weight_decay", 0.0);
    const int warmup = bench.at("timing").at("warmup_steps"), steps = bench.at("timing").at("steps");
    STAPO_CHECK(steps > 0, config_path, ": timing.steps must be positive");

    std::string why;
    STAPO_CHECK(stapo::cuda_device_available(&why), "gpu_step needs a CUDA device: ", why);
    const std::string device = stapo::cuda_device_description();
    double peak = 0;
    for (const auto& [part, tflops] : bench.at("peak_bf16_tflops").items())
      if (part != "_comment" && device.find(part) != std::string::npos) peak = tflops.get<double>();

    const nlohmann::json engine_flags = bench.value("engine", nlohmann::json::object());
    options.master = bf16_params ? stapo::MasterKind::none
                                 : stapo::master_from_name(master.empty() ? engine_flags.value("master", "fp32") : master,
                                                           config_path + " engine.master");
    options.moments = stapo::moments_from_name(moments.empty() ? engine_flags.value("moments", "fp32") : moments,
                                               config_path + " engine.moments");
    if (recompute.empty() && engine_flags.contains("recompute")) {
      const nlohmann::json& level = engine_flags["recompute"];
      recompute = level.is_string() ? level.get<std::string>() : level.dump();
      STAPO_CHECK(recompute == "auto" || recompute == "0" || recompute == "1" || recompute == "2", config_path,
                  ": engine.recompute is ", recompute, ", not 0, 1, 2 or \"auto\"");
    }
    if (recompute.empty()) recompute = "auto";
    options.grads = stapo::grads_from_name(grads.empty() ? engine_flags.value("grads", "fp32") : grads,
                                           config_path + " engine.grads");
    if (cap_gib < 0) cap_gib = bench.value("memory_cap_gib", 0.0);
    options.memory_cap_bytes = (uint64_t)(cap_gib * double(1ull << 30));
    const stapo::PairBatch batch = bench_batch(pairs, seq_len, prompt_len, config.vocab_size);
    options.max_tokens = batch.tokens.rows * seq_len;
    const uint64_t available = stapo::cuda_engine_available_bytes(options.memory_cap_bytes);
    if (recompute == "auto") {  // as train_stapo: the least recomputation whose plan fits, else level 1's plan
      options.recompute = stapo::memory_plan_recompute_auto(
                              config, stapo::cuda_engine_plan_input(config, options, pairs, seq_len), available)
                              .value_or(1);
      fprintf(stderr, "--recompute auto: %d\n", options.recompute);
    } else {
      options.recompute = std::stoi(recompute);
    }
    const uint64_t planned =
        stapo::memory_plan(config, stapo::cuda_engine_plan_input(config, options, pairs, seq_len)).total();
    fprintf(stderr, "planned device memory %s, available %s%s\n", stapo::gib(planned).c_str(),
            stapo::gib(available).c_str(), options.memory_cap_bytes ? " (capped)" : "");
    STAPO_CHECK(planned <= available, "gpu_step: the plan needs ", stapo::gib(planned), ", only ",
                stapo::gib(available), " are available: see train_stapo --dry-run for flags that fit");
    // Weights N(0, 0.02) as HF initialises, drawn on the device: no 5 GB upload.
    stapo::CudaEngine engine(config, options);
    fprintf(stderr, "%s\n", engine.description().c_str());

    cudaEvent_t start, end;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&end));
    std::vector<double> times;  // seconds of each timed step
    double last_loss = 0;
    stapo::PhaseTimer phase_timer(engine.stream());
    int step_number = 0;
    // One optimizer step, exactly the trainer's, between two events on the engine's stream: its seconds.
    auto step = [&](const char* kind, bool phased) {
      ++step_number;
      cudaCheck(cudaEventRecord(start, engine.stream()));
      engine.zero_grad();
      stapo::run_micro_batches(engine, std::vector<stapo::PairBatch>(micro_batches, batch), loss, true);
      engine.optimizer_step({lr, 1.0, adamw, step_number});
      if (phased) phase_timer.stop();
      const stapo::StepResults results = engine.take_results();
      stapo::MetricSums sums;
      for (const stapo::PairResult& p : results.pairs) sums.add(p, loss);
      last_loss = sums.loss(loss);
      cudaCheck(cudaEventRecord(end, engine.stream()));
      cudaCheck(cudaEventSynchronize(end));
      float ms = 0;
      cudaCheck(cudaEventElapsedTime(&ms, start, end));
      fprintf(stderr, "%s step %d: %.1f ms, loss %.4f, grad norm %.3f\n", kind, step_number, ms, last_loss,
              results.grad_norm);
      return ms / 1e3;
    };
    for (int i = 0; i < warmup; ++i) step("warm-up", false);
    double timed_s = 0;
    while ((int)times.size() < steps || timed_s < min_seconds) {
      times.push_back(step("timed", false));
      timed_s += times.back();
    }
    if (phase_steps > 0) engine.set_phase_timer(&phase_timer);
    for (int i = 0; i < phase_steps; ++i) step("phase-timed", true);
    engine.set_phase_timer(nullptr);
    std::sort(times.begin(), times.end());
    const size_t k = times.size();
    const double median = k % 2 ? times[k / 2] : 0.5 * (times[k / 2 - 1] + times[k / 2]);
    const stapo::BatchFlopCounts counts = stapo::batch_flop_counts(batch);
    const double tokens = double(micro_batches) * counts.tokens;
    const double flops = 3.0 * micro_batches * stapo::batch_forward_flops_needed(config, counts);
    const double flops_all_tokens = 3.0 * micro_batches * stapo::batch_forward_flops_all_tokens(config, counts);
    const stapo::CudaStepStats stats = engine.take_step_stats();

    nlohmann::ordered_json result;
    result["impl"] = "stapo";
    result["device"] = device;
    result["median_step_s"] = median;
    result["timed_steps"] = times.size();
    result["timed_s"] = timed_s;
    result["tokens_per_s"] = tokens / median;
    result["model_tflops_per_step"] = flops / 1e12;
    result["model_tflops_per_step_all_tokens"] = flops_all_tokens / 1e12;
    result["mfu"] = peak > 0 ? nlohmann::json(flops / median / 1e12 / peak) : nlohmann::json(nullptr);
    result["mfu_all_tokens"] =
        peak > 0 ? nlohmann::json(flops_all_tokens / median / 1e12 / peak) : nlohmann::json(nullptr);
    result["peak_memory_gib"] = stats.peak_bytes / double(1 << 30);
    result["planned_memory_gib"] = planned / double(1ull << 30);
    result["memory_cap_gib"] = cap_gib > 0 ? nlohmann::json(cap_gib) : nlohmann::json(nullptr);
    result["master"] = stapo::master_name(options.master);
    result["moments"] = stapo::moments_name(options.moments);
    result["grads"] = stapo::grads_name(options.grads);
    result["recompute"] = options.recompute;
    result["attention"] = attention;
    result["grad_first_write"] = options.paths.grad_first_write;
    result["rmsnorm_warp"] = options.paths.rmsnorm_warp;
    result["device_embedding_index"] = options.paths.device_embedding_index;
    result["adamw_multi_tensor"] = options.paths.adamw_multi_tensor;
    result["matmul_autotune"] = options.paths.matmul_autotune;
    result["fused_projections"] = options.paths.fused_projections;
    result["cuda_graph"] = options.paths.cuda_graph;
    result["lm_head_chunk_rows"] = options.lm_head_chunk_rows;
    if (options.paths.cuda_graph) result["cuda_graphs"] = engine.graph_summary();  // captured, replayed, evicted
    result["loss"] = last_loss;
    if (phase_steps > 0) {
      const stapo::PhaseTotals totals = phase_timer.collect();
      nlohmann::ordered_json phases;
      for (int p = 0; p < stapo::PHASE_COUNT; ++p)
        phases[stapo::phase_name((stapo::Phase)p)] = totals.ms[p] / totals.steps;
      result["phases_ms"] = phases;
      result["phase_timed_step_ms"] = totals.step_ms / totals.steps;
      result["phase_timed_steps"] = totals.steps;
      fprintf(stderr, "phases (%d steps with an event at every boundary; median step without them: %.2f ms):\n%s",
              totals.steps, median * 1e3, stapo::phase_table(totals).c_str());
    }
    printf("%s\n", result.dump().c_str());
    if (!out_path.empty()) stapo::write_file_atomic(out_path, result.dump(1) + "\n");
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(end));
  });
}
