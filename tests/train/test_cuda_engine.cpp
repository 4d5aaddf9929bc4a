// The CUDA engine (train/cuda_engine.h) against the CPU reference engine (CpuEngine<float>), one optimizer step
// through the trainer's own step code, on tiny random models (tests/train/engine_contract.h): what
// `train_stapo --device-check` printed before engine v2, as tests. Label gpu: skipped without a device.
//
// Compared per case: per-sequence log-prob and entropy sums (error per response token), the loss, the gradient
// norm, every gradient tensor and every tensor's AdamW update (relative L2, worst tensor named). Cases: a Llama
// (llama3 RoPE, untied) under each recompute level, a Mistral (sliding window, tied embeddings), and with cuDNN
// builds both on cuDNN's attention; bf16 weights with stochastic rounding; gradient accumulation over 2 and 4
// micro-batches against one large batch, and over k copies of one batch (exact up to fp32 rounding); ORPO with
// its NLL over prompt + response (the chosen prompts' rows in the lm_head, their sums and backward). The compact
// optimizer state (kernels/adamw_compact.h): the split master equals the fp32 master bit for bit over steps,
// 8-bit moments follow fp32 ones, bf16 gradients fp32 ones, recompute levels give the same trajectory, a resume
// with each kind is exact, the memory plan bounds what the engine allocates, and the memory cap holds. Data
// parallel over NCCL at one rank equals one process.
//
// Tolerances. bf16 weights, activations and their gradients carry 8 significant bits, compounded over two layers:
// the engine agrees with fp32 to a few percent in the gradients, not to 1e-6. The first GPU run (H100, 2026-11-27,
// the same models, batch and seeds, then through --device-check with bf16 gradients) measured at worst:
// dS/token 1.01e-2, dH/token 9.96e-4, loss 2.27e-3, grad norm 4.35e-3, gradient tensor 2.81e-2, update 2.83e-2, and
// recompute levels 1 and 2 reproducing level 0's gradients exactly. The tolerances below are about twice those
// (the old ones, set before any GPU run, were 0.03, 0.03, 0.02, 0.05, 0.08, 0.1 and 1e-3). Checks that did not
// exist then (accumulation, the stochastic-rounding update) state their reasoning and are to be calibrated on the
// first GPU run: every test prints its measured errors. Since ed08a16 the tests run the tensor-core attention
// (flash2) by default; on the H200 (2026-11-29) that raised the gradient norm's error above the H100's twice (9e-3),
// and kGradNormTol is twice the new measurement; the other errors stayed within their tolerances.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "kernels/cuda_common.h"
#include "tests/gpu_test_util.h"
#include "tests/train/engine_contract.h"
#include "train/collective_nccl.h"
#include "train/cpu_engine.h"
#include "train/cuda_engine.h"
#include "train/model_flops.h"

namespace stapo {
namespace {

constexpr double kLogpPerTokenTol = 0.02;     // nats per response token (H100: 1.01e-2)
constexpr double kEntropyPerTokenTol = 2e-3;  // nats per response token (H100: 9.96e-4)
constexpr double kLossTol = 5e-3;             // relative, absolute below 1 (H100: 2.27e-3)
// relative. H100 (SIMT attention): 4.35e-3. H200 (2026-11-29, the tensor-core attention, whose P and dS are rounded
// to bf16 before their products): 1.19e-2 (accumulation), 1.13e-2 (bf16 weights).
constexpr double kGradNormTol = 0.025;
constexpr double kGradTol = 0.06;             // relative L2, worst tensor (H100: 2.81e-2)
constexpr double kUpdateTol = 0.06;           // relative L2, worst tensor (H100: 2.83e-2)
// k micro-batches that are copies of one batch: each adds exactly 1/k of that batch's gradient (the 1/P scale is
// a power of two and every backward op is linear in its upstream gradient), so the fp32 sum differs from the
// one-batch gradient only by the fp32 rounding of the adds: ~k·2^-24. A bf16 accumulator would be off by ~2^-9
// (2e-3) per add. To calibrate on the first GPU run.
constexpr double kCopiesTol = 1e-6;       // k = 2, 4
constexpr double kManyCopiesTol = 1e-5;   // k = 32 (--grad-accum 32, SimPO's batch of 128 in micro-batches of 4)
// ORPO: the relative L2 change of the CPU reference's worst gradient tensor when its NLL covers the response only
// instead of prompt + response (measured here, on the CPU: 0.669, and ≥ 0.40 for every tensor). Far above kGradTol,
// so a CUDA engine that dropped the prompt rows would fail the comparison.
constexpr double kPromptNllEffect = 0.3;

// Two pairs in rows of 32 (the batch --device-check used). Packed: row 0 holds sequences 0 and 1, row 1
// sequence 2, row 2 sequence 3 and padding. Unpacked (what the cuDNN attention path takes): one sequence per row,
// rows 0, 1 and 3 padded. Random tokens; targets are the next token within each sequence.
PairBatch check_batch(int V, uint64_t seed, bool packed) {
  struct Seq {
    int row, start, len, prompt;
  };
  const Seq packed_seqs[4] = {{0, 0, 18, 6}, {0, 18, 14, 6}, {1, 0, 32, 9}, {2, 0, 23, 9}};
  const Seq unpacked_seqs[4] = {{0, 0, 18, 6}, {1, 0, 14, 6}, {2, 0, 32, 9}, {3, 0, 23, 9}};
  const Seq* seqs = packed ? packed_seqs : unpacked_seqs;
  PairBatch b;
  TokenBatch& t = b.tokens;
  t.rows = packed ? 3 : 4;
  t.T = 32;
  const size_t n = (size_t)t.rows * t.T;
  t.tokens.assign(n, 0);
  t.targets.assign(n, -1);
  t.positions.assign(n, 0);
  t.segments.assign(n, -1);
  b.response_sequence.assign(n, -1);
  b.num_pairs = 2;
  b.pair_ids = {0, 1};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> token(0, V - 1);
  for (int s = 0; s < 4; ++s) {
    const Seq& q = seqs[s];
    const size_t first = (size_t)q.row * t.T + q.start;
    for (int p = 0; p < q.len; ++p) t.tokens[first + p] = token(rng);
    for (int p = 0; p < q.len; ++p) {
      const size_t i = first + p;
      t.positions[i] = p;
      t.segments[i] = q.start == 0 ? 0 : 1;
      if (p + 1 < q.len) t.targets[i] = t.tokens[i + 1];
      if (p >= q.prompt - 1 && p + 1 < q.len) b.response_sequence[i] = s;
    }
    b.response_length.push_back(q.len - q.prompt);
  }
  return b;
}

CudaEngineOptions engine_options(int recompute, bool bf16_params, AttentionPath attention = AttentionPath::flash2) {
  CudaEngineOptions o;
  o.recompute = recompute;
  o.master = bf16_params ? MasterKind::none : MasterKind::fp32;
  o.attention = attention;
  o.lm_head_chunk_rows = 40;    // 57 response rows: chunks of 40, 17
  o.lm_head_chunk_vocab = 128;  // 384 words: 3 chunks
  o.seed = 7;
  o.paths = StepPaths::baseline();  // each faster path is compared against this (with_step_paths, the tests below)
  return o;
}

// Every faster code path of the step on (train/cuda_model.h's StepPaths).
CudaEngineOptions with_step_paths(CudaEngineOptions o) {
  o.paths.grad_first_write = true;
  o.paths.rmsnorm_warp = true;
  o.paths.device_embedding_index = true;
  o.paths.adamw_multi_tensor = true;
  o.paths.matmul_autotune = true;
  o.paths.fused_projections = true;
  return o;
}

LossConfig check_loss() {
  LossConfig loss = loss_defaults(LossKind::stapo_sigmoid);
  loss.alpha = 0.5;  // the NLL term too
  return loss;
}

// Every parameter of an engine on the host: the CPU engine's own, the CUDA engine's through parameter_to_host.
std::vector<std::vector<float>> host_tensors(Engine& engine, bool grad) {
  std::vector<std::vector<float>> out;
  if (auto* cuda = dynamic_cast<CudaEngine*>(&engine)) {
    for (size_t i = 0; i < cuda->num_tensors(); ++i) out.push_back(cuda->parameter_to_host(i, grad));
    return out;
  }
  auto& cpu = dynamic_cast<CpuEngine<float>&>(engine);
  for (const Parameter<float>& p : cpu.model().parameters()) {
    const float* src = grad ? p.grad : p.data;
    out.emplace_back(src, src + p.numel);
  }
  return out;
}

// What one engine did in the step.
struct StepRecord {
  std::vector<double> logp, entropy;  // per sequence
  std::vector<double> prompt_logp, prompt_tokens;  // per pair: the chosen prompt's P and |x| − 1 (0 when not read)
  double loss = 0, grad_norm = 0;     // grad_norm from the gradients on the host
  std::vector<std::vector<float>> grads, before, after;
};

// Forward and backward of the micro-batches through the trainer's own code, and the step's results; the update
// comes later (its ε depends on the reference gradients).
StepRecord step_gradients(Engine& engine, const std::vector<PairBatch>& micro_batches, const LossConfig& loss) {
  StepRecord r;
  engine.zero_grad();
  run_micro_batches(engine, micro_batches, loss, true);
  MetricSums sums;
  for (const PairResult& p : engine.take_results().pairs) {
    sums.add(p, loss);
    r.logp.insert(r.logp.end(), {p.logps.logp_chosen, p.logps.logp_rejected});
    r.entropy.insert(r.entropy.end(), {p.entropy_chosen, p.entropy_rejected});
    r.prompt_logp.push_back(p.logps.prompt_chosen);
    r.prompt_tokens.push_back(p.logps.prompt_tokens_chosen);
  }
  r.loss = sums.loss(loss);
  r.grads = host_tensors(engine, true);
  r.before = host_tensors(engine, false);
  double sum_squares = 0;
  for (const std::vector<float>& g : r.grads)
    for (float x : g) sum_squares += double(x) * x;
  r.grad_norm = std::sqrt(sum_squares);
  return r;
}

// AdamW's first step is lr·g/(|g| + ε): with ε at the gradients' RMS it is a smooth function of g, so bf16 noise
// in small gradients changes the update a little instead of flipping its sign. Clipping at half the reference
// norm makes the clip scale part of the check.
OptimizerUpdate check_update(const StepRecord& ref, double lr) {
  double sum_sq = 0, count = 0;
  for (const std::vector<float>& g : ref.grads)
    for (float x : g) sum_sq += double(x) * x, count += 1;
  OptimizerUpdate u;
  u.lr = lr;
  u.max_grad_norm = 0.5 * ref.grad_norm;
  u.adamw.eps = std::sqrt(sum_sq / count);
  u.adamw.weight_decay = 0.1;
  u.t = 1;
  return u;
}

void step_update(Engine& engine, const OptimizerUpdate& update, StepRecord& r) {
  engine.optimizer_step(update);
  const StepResults results = engine.take_results();
  ASSERT_TRUE(results.updated) << "the update did not run (non-finite gradients or loss)";
  EXPECT_NEAR(results.grad_norm, r.grad_norm, 1e-4 * r.grad_norm) << "the engine's norm vs the host's";
  r.after = host_tensors(engine, false);
}

std::vector<float> difference(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// ‖out − ref‖ / ‖ref‖ (0 for ref = out = 0).
double relative_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += std::pow(double(out[i]) - ref[i], 2);
    norm += double(ref[i]) * ref[i];
  }
  if (norm == 0) return diff == 0 ? 0 : INFINITY;
  return std::sqrt(diff / norm);
}

struct Worst {
  double error = 0;
  std::string tensor;
  void add(double e, const std::string& name) {
    if (!(e < error)) error = e, tensor = name;  // NaN is the worst
  }
};

Worst worst_tensor(const std::vector<std::vector<float>>& out, const std::vector<std::vector<float>>& ref,
                   const std::vector<ParamSpec>& specs) {
  Worst w;
  for (size_t i = 0; i < ref.size(); ++i) w.add(relative_l2(out[i], ref[i]), specs[i].name);
  return w;
}

// The step's agreement with the reference: everything but the update.
struct Agreement {
  double logp = 0, entropy = 0, loss = 0, norm = 0;
  Worst grad;
};

Agreement compare_gradients(const StepRecord& out, const StepRecord& ref, const std::vector<int32_t>& lengths,
                            const std::vector<ParamSpec>& specs) {
  Agreement a;
  for (size_t s = 0; s < ref.logp.size(); ++s) {
    a.logp = std::max(a.logp, std::fabs(out.logp[s] - ref.logp[s]) / lengths[s]);
    a.entropy = std::max(a.entropy, std::fabs(out.entropy[s] - ref.entropy[s]) / lengths[s]);
  }
  a.loss = std::fabs(out.loss - ref.loss) / std::max(1.0, std::fabs(ref.loss));
  a.norm = std::fabs(out.grad_norm - ref.grad_norm) / ref.grad_norm;
  a.grad = worst_tensor(out.grads, ref.grads, specs);
  return a;
}

void expect_agreement(const Agreement& a, const std::string& what) {
  EXPECT_LE(a.logp, kLogpPerTokenTol) << what << ": dS/token";
  EXPECT_LE(a.entropy, kEntropyPerTokenTol) << what << ": dH/token";
  EXPECT_LE(a.loss, kLossTol) << what << ": loss";
  EXPECT_LE(a.norm, kGradNormTol) << what << ": grad norm";
  EXPECT_LE(a.grad.error, kGradTol) << what << ": gradient of " << a.grad.tensor;
}

std::vector<int32_t> sequence_lengths(const std::vector<PairBatch>& micro_batches) {
  std::vector<int32_t> out;
  for (const PairBatch& b : micro_batches) out.insert(out.end(), b.response_length.begin(), b.response_length.end());
  return out;
}

// One step of a case: the CPU reference and the CUDA engine from the same weights and batch.
struct CaseRun {
  StepRecord ref, out;
  std::vector<ParamSpec> specs;
};

CaseRun run_case(bool mistral, const CudaEngineOptions& options, const std::vector<PairBatch>& ref_batches,
                 const std::vector<PairBatch>& cuda_batches, double lr, const LossConfig& loss = check_loss()) {
  CaseRun run;
  auto model = test::engine_test_model(mistral, 1234);
  run.specs = model_param_specs(model->config());
  CudaEngine gpu(*model, options);
  CpuEngine<float> cpu(std::move(model));
  run.ref = step_gradients(cpu, ref_batches, loss);
  run.out = step_gradients(gpu, cuda_batches, loss);
  const OptimizerUpdate update = check_update(run.ref, lr);
  step_update(cpu, update, run.ref);
  step_update(gpu, update, run.out);
  return run;
}

Worst update_error(const CaseRun& run) {
  Worst w;
  for (size_t i = 0; i < run.specs.size(); ++i)
    w.add(relative_l2(difference(run.out.after[i], run.out.before[i]), difference(run.ref.after[i], run.ref.before[i])),
          run.specs[i].name);
  return w;
}

void print_row(const std::string& name, const Agreement& a, const Worst& update, const std::string& note) {
  printf("%-24s dS/token %.2e  dH/token %.2e  dloss %.2e  dnorm %.2e  grad %.2e (%s)  update %.2e (%s)%s\n",
         name.c_str(), a.logp, a.entropy, a.loss, a.norm, a.grad.error, a.grad.tensor.c_str(), update.error,
         update.tensor.c_str(), note.c_str());
}

// The --device-check cases: each recompute level, a Mistral, both on the SIMT attention (flash), both on the
// tensor-core attention's atomic backward (flash2-atomic), both on its 32-row tiles (flash2-narrow) and (cuDNN
// builds) both on cuDNN's attention; the rest on the default tensor-core attention (flash2).
// Recompute levels 1 and 2 recompute the same values with the same kernels: their gradients equal level 0's bit
// for bit (H100, SIMT attention: exactly; flash2 has no atomics either; flash2-atomic has, and is left out of that).
TEST(CudaEngine, OneStepMatchesCpuReference) {
  STAPO_REQUIRE_GPU();
  printf("CUDA engine vs CPU fp32 reference, one step, on %s\n", cuda_device_description().c_str());
  struct Case {
    std::string name;
    bool mistral;
    CudaEngineOptions options;
  };
  std::vector<Case> cases = {{"llama recompute 0", false, engine_options(0, false)},
                             {"llama recompute 1", false, engine_options(1, false)},
                             {"llama recompute 2", false, engine_options(2, false)},
                             {"mistral tied window", true, engine_options(1, false)},
                             {"llama SIMT attention", false, engine_options(1, false, AttentionPath::flash)},
                             {"mistral SIMT window", true, engine_options(1, false, AttentionPath::flash)},
                             {"llama atomic attention", false, engine_options(1, false, AttentionPath::flash2_atomic)},
                             {"mistral atomic window", true, engine_options(1, false, AttentionPath::flash2_atomic)},
                             {"llama narrow tiles", false, engine_options(1, false, AttentionPath::flash2_narrow)},
                             {"mistral narrow window", true, engine_options(1, false, AttentionPath::flash2_narrow)},
                             {"llama step paths", false, with_step_paths(engine_options(1, false))},
                             {"mistral tied step paths", true, with_step_paths(engine_options(1, false))}};
#ifdef STAPO_HAVE_CUDNN
  cases.push_back({"llama cudnn attention", false, engine_options(1, false, AttentionPath::cudnn)});
  cases.push_back({"mistral cudnn window", true, engine_options(1, false, AttentionPath::cudnn)});
#endif
  std::vector<std::vector<float>> recompute0_grads;
  for (const Case& k : cases) {
    const int V = test::engine_test_config(k.mistral).vocab_size;
    const std::vector<PairBatch> batch = {check_batch(V, 1235, k.options.attention != AttentionPath::cudnn)};
    const CaseRun run = run_case(k.mistral, k.options, batch, batch, 1e-2);
    const Agreement a = compare_gradients(run.out, run.ref, sequence_lengths(batch), run.specs);
    const Worst update = update_error(run);
    expect_agreement(a, k.name);
    EXPECT_LE(update.error, kUpdateTol) << k.name << ": update of " << update.tensor;
    std::string note;
    if (!k.mistral && k.options.attention == AttentionPath::flash2 && k.options.paths.is_baseline()) {
      if (k.options.recompute == 0) {
        recompute0_grads = run.out.grads;
      } else {
        size_t differing = 0;
        for (size_t i = 0; i < run.out.grads.size(); ++i)
          differing += std::memcmp(run.out.grads[i].data(), recompute0_grads[i].data(),
                                   run.out.grads[i].size() * sizeof(float)) != 0;
        EXPECT_EQ(differing, 0u) << k.name << ": gradient tensors that differ from recompute 0's";
        note = cat(" (tensors differing from recompute 0: ", differing, ")");
      }
    }
    print_row(k.name, a, update, note);
  }
}

// Gradient accumulation: the step's batch of 4 pairs as 2 micro-batches of 2 and as 4 of 1 (the trainer's
// StepScale: 1/P and the NLL weight over the whole step), on the CUDA engine, against the CPU reference on the one
// batch of 4: the same tolerances as one step. Packed rows, so micro-batches differ in rows and lengths.
TEST(CudaEngine, AccumulatedMicroBatchesMatchOneLargeBatch) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  const ModelConfig config = test::engine_test_config(false);
  Shard shard(test::engine_test_shard(dir.path, "accumulate.bin", 4, config.vocab_size, 31));
  const std::vector<PairBatch> one = {test::batch_of(shard, {0, 1, 2, 3}, test::engine_test_loader(4, true))};
  const PairLoaderConfig lc2 = test::engine_test_loader(2, true), lc1 = test::engine_test_loader(1, true);
  const std::vector<PairBatch> two = {test::batch_of(shard, {0, 1}, lc2), test::batch_of(shard, {2, 3}, lc2)};
  const std::vector<PairBatch> four = {test::batch_of(shard, {0}, lc1), test::batch_of(shard, {1}, lc1),
                                       test::batch_of(shard, {2}, lc1), test::batch_of(shard, {3}, lc1)};
  for (const auto& [name, micro] : {std::make_pair("grad_accum 2", two), std::make_pair("grad_accum 4", four)}) {
    const CaseRun run = run_case(false, engine_options(1, false), one, micro, 1e-2);
    const Agreement a = compare_gradients(run.out, run.ref, sequence_lengths(one), run.specs);
    const Worst update = update_error(run);
    expect_agreement(a, name);
    EXPECT_LE(update.error, kUpdateTol) << name << ": update of " << update.tensor;
    print_row(name, a, update, " (vs the CPU reference on one batch of 4)");
  }
}

// ORPO with TRL's NLL over prompt + response (its defaults: β = λ 0.1, α 1): the CUDA engine runs the lm_head on
// the chosen prompts' rows too, sums them (P_w, |x| − 1), and spreads ∂ℓ/∂P_w back through them. Against the CPU
// reference: one batch, padded and packed, and 2 micro-batches against one batch of 4 (the step's NLL normaliser
// counts the chosen prompts' tokens over every micro-batch); the same tolerances as every case, the prompt's P
// per prompt token like S per response token, its token counts exactly. So that the comparison cannot pass with
// the prompt rows missing, the CPU reference's own gradients with the NLL over the response only must differ from
// the prompt + response ones by far more than the gradient tolerance (kPromptNllEffect, measured on the CPU).
TEST(CudaEngine, OrpoNllOverPromptAndResponseMatchesCpuReference) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  const ModelConfig config = test::engine_test_config(false);
  Shard shard(test::engine_test_shard(dir.path, "orpo.bin", 4, config.vocab_size, 43));
  const LossConfig loss = loss_defaults(LossKind::orpo);
  ASSERT_TRUE(loss_uses_prompt(loss)) << "orpo's default NLL covers the prompt (TRL's ORPO)";
  const PairLoaderConfig lc4 = test::engine_test_loader(4, true), lc2 = test::engine_test_loader(2, true);
  const std::vector<PairBatch> one = {test::batch_of(shard, {0, 1, 2, 3}, lc4)};
  const std::vector<PairBatch> padded = {test::batch_of(shard, {0, 1, 2, 3}, test::engine_test_loader(4, false))};
  const std::vector<PairBatch> two = {test::batch_of(shard, {0, 1}, lc2), test::batch_of(shard, {2, 3}, lc2)};
  {
    LossConfig response_only = loss;
    response_only.nll_span = NllSpan::response;
    CpuEngine<float> with(test::engine_test_model(false, 1234)), without(test::engine_test_model(false, 1234));
    const StepRecord a = step_gradients(with, one, loss), b = step_gradients(without, one, response_only);
    const Worst effect = worst_tensor(b.grads, a.grads, model_param_specs(config));
    EXPECT_GE(effect.error, kPromptNllEffect) << "the prompt NLL barely changes the gradients: the test is blind";
    printf("orpo: the prompt NLL changes the CPU reference's gradients by %.2e (%s)\n", effect.error,
           effect.tensor.c_str());
  }
  struct Case {
    std::string name;
    const std::vector<PairBatch>& ref;
    const std::vector<PairBatch>& cuda;
  };
  for (const Case& k : {Case{"orpo packed", one, one}, Case{"orpo padded", padded, padded},
                        Case{"orpo grad_accum 2", one, two}}) {
    const CaseRun run = run_case(false, engine_options(1, false), k.ref, k.cuda, 1e-2, loss);
    const Agreement a = compare_gradients(run.out, run.ref, sequence_lengths(k.ref), run.specs);
    const Worst update = update_error(run);
    expect_agreement(a, k.name);
    EXPECT_LE(update.error, kUpdateTol) << k.name << ": update of " << update.tensor;
    double prompt_error = 0;
    for (size_t i = 0; i < run.ref.prompt_tokens.size(); ++i) {
      ASSERT_GT(run.ref.prompt_tokens[i], 0) << k.name << ": pair " << i << " has no prompt token to predict";
      EXPECT_EQ(run.out.prompt_tokens[i], run.ref.prompt_tokens[i]) << k.name << ": |x| − 1 of pair " << i;
      prompt_error = std::max(prompt_error, std::fabs(run.out.prompt_logp[i] - run.ref.prompt_logp[i]) /
                                                run.ref.prompt_tokens[i]);
    }
    EXPECT_LE(prompt_error, kLogpPerTokenTol) << k.name << ": dP/token";
    char note[32];
    snprintf(note, sizeof(note), "  dP/token %.2e", prompt_error);
    print_row(k.name, a, update, note);
  }
}

// k micro-batches that are copies of one batch against that batch alone, both on the CUDA engine: fp32
// accumulation makes them equal up to fp32 rounding (see kCopiesTol). This is what bf16 gradients could not do.
TEST(CudaEngine, AccumulatedCopiesEqualOneBatch) {
  STAPO_REQUIRE_GPU();
  const LossConfig loss = check_loss();
  const ModelConfig config = test::engine_test_config(false);
  const PairBatch batch = check_batch(config.vocab_size, 1235, true);
  auto model = test::engine_test_model(false, 1234);
  CudaEngine single(*model, engine_options(1, false));
  const StepRecord ref = step_gradients(single, {batch}, loss);
  for (int k : {2, 4, 32}) {
    CudaEngine engine(*model, engine_options(1, false));
    const StepRecord out = step_gradients(engine, std::vector<PairBatch>(k, batch), loss);
    const Worst w = worst_tensor(out.grads, ref.grads, model_param_specs(config));
    const double tol = k <= 4 ? kCopiesTol : kManyCopiesTol;
    EXPECT_LE(w.error, tol) << k << " copies: gradient of " << w.tensor;
    EXPECT_NEAR(out.loss, ref.loss, 1e-6 * std::fabs(ref.loss)) << k << " copies";
    printf("%2d copies of one batch: worst gradient tensor %.2e (%s), tolerance %.0e\n", k, w.error,
           w.tensor.c_str(), tol);
  }
}

// bf16 weights with stochastic rounding. From weights that are bf16 values already, the fp32-master engine and
// the bf16 engine compute the same gradients bit for bit and the same fp32 update; the bf16 engine must then hold,
// for every element, one of the two bf16 neighbours of the master engine's new weight (toward or away from zero),
// rounded away from zero at the rate of the dropped fraction (unbiased, within 5 standard deviations). So that a
// missing or wrong update cannot hide in the rounding, the update is made much larger than one bf16 step: lr 0.05
// and ε 1e-8 move every weight with a non-zero gradient by about lr, ≥ 3 ulps of a weight near 1 (asserted).
// Its gradients, loss and sums are also checked against the CPU reference like every case.
TEST(CudaEngine, Bf16WeightsStochasticRounding) {
  STAPO_REQUIRE_GPU();
  const LossConfig loss = check_loss();
  const ModelConfig config = test::engine_test_config(false);
  const std::vector<PairBatch> batch = {check_batch(config.vocab_size, 1235, true)};
  auto model = test::engine_test_model(false, 1234);
  for (size_t i = 0; i < model->num_params(); ++i)
    model->param_data()[i] = __bfloat162float(__float2bfloat16_rn(model->param_data()[i]));
  const std::vector<ParamSpec> specs = model_param_specs(config);
  CudaEngine master(*model, engine_options(1, false)), sr(*model, engine_options(1, true));
  CpuEngine<float> cpu(std::move(model));
  const StepRecord ref = step_gradients(cpu, batch, loss);
  StepRecord a = step_gradients(master, batch, loss), b = step_gradients(sr, batch, loss);
  const Agreement agreement = compare_gradients(b, ref, sequence_lengths(batch), specs);
  expect_agreement(agreement, "bf16 weights");
  for (size_t i = 0; i < specs.size(); ++i)
    ASSERT_EQ(std::memcmp(a.grads[i].data(), b.grads[i].data(), a.grads[i].size() * sizeof(float)), 0)
        << specs[i].name << ": the two storage modes computed different gradients from the same weights";

  OptimizerUpdate update = check_update(ref, 0.05);
  update.adamw.eps = 1e-8;
  step_update(master, update, a);
  step_update(sr, update, b);
  // Rounding away from zero, counted separately for dropped fractions f < 1/2 and f ≥ 1/2: round-to-nearest
  // would give 0 and all of them, stochastic rounding f on average (as KernelAdamW.StochasticRoundingIsUnbiased).
  struct Half {
    double count = 0, away = 0, expected = 0, variance = 0;
  } halves[2];
  size_t not_neighbour = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    size_t moved = 0, large = 0;
    for (size_t e = 0; e < a.after[i].size(); ++e) {
      const float target = a.after[i][e], got = b.after[i][e];
      uint32_t bits;
      std::memcpy(&bits, &target, 4);
      const uint32_t toward = bits & 0xFFFF0000u, fraction = bits & 0xFFFFu;
      uint32_t got_bits;
      std::memcpy(&got_bits, &got, 4);
      not_neighbour += got_bits != toward && got_bits != toward + 0x10000u;
      if (fraction != 0) {
        const double f = fraction / 65536.0;
        Half& h = halves[f < 0.5 ? 0 : 1];
        h.count += 1;
        h.away += got_bits == toward + 0x10000u;
        h.expected += f;
        h.variance += f * (1 - f);
      }
      if (a.grads[i][e] != 0.0f) {
        moved += 1;
        float ulp_low, ulp_high;
        const uint32_t next = toward + 0x10000u;
        std::memcpy(&ulp_low, &toward, 4);
        std::memcpy(&ulp_high, &next, 4);
        large += std::fabs(target - a.before[i][e]) >= 3 * std::fabs(ulp_high - ulp_low);
      }
    }
    ASSERT_GE(large, moved * 99 / 100) << specs[i].name << ": the test needs updates of ≥ 3 bf16 ulps for (almost) "
                                       << "every weight with a gradient (" << large << " of " << moved << ")";
  }
  EXPECT_EQ(not_neighbour, 0u) << "bf16 weights that are not a neighbour of the fp32 update";
  printf("bf16 weights + SR: dS/token %.2e  dH/token %.2e  dloss %.2e  dnorm %.2e  grad %.2e (%s)\n", agreement.logp,
         agreement.entropy, agreement.loss, agreement.norm, agreement.grad.error, agreement.grad.tensor.c_str());
  for (int k = 0; k < 2; ++k) {
    const Half& h = halves[k];
    ASSERT_GT(h.count, 10000) << "too few updates with f " << (k ? ">= 0.5" : "< 0.5") << " to test";
    EXPECT_NEAR(h.away, h.expected, 5 * std::sqrt(h.variance) + 1)
        << "elements rounded away from zero, f " << (k ? ">= 0.5" : "< 0.5");
    printf("  f %s: %.0f of %.0f elements rounded away from zero, %.1f expected (sd %.1f)\n", k ? ">= 1/2" : "< 1/2",
           h.away, h.count, h.expected, std::sqrt(h.variance));
  }
}

// The engine contract, as the CPU engine meets it (test_engine_contract.cpp).
TEST(CudaEngine, ResultsCollectEveryPairUntilTaken) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  auto model = test::engine_test_model(false, 1234);
  test::check_results_collect_every_pair([&] { return std::make_unique<CudaEngine>(*model, engine_options(1, false)); },
                                         dir.path);
}

TEST(CudaEngine, NonFiniteLossSkipsTheUpdate) {
  STAPO_REQUIRE_GPU();
  auto model = test::engine_test_model(false, 1234);
  for (bool bf16_params : {false, true}) {
    test::TempDir dir;
    test::check_nonfinite_loss_skips_update(
        [&] { return std::make_unique<CudaEngine>(*model, engine_options(1, bf16_params)); }, dir.path);
  }
}

// Step statistics: one timed step per zero_grad → optimizer_step, with the model FLOPs of train/model_flops.h (the
// lm_head on response rows; the all-token count larger, since prompts are skipped); a checkpoint reloads as the
// engine's weights.
TEST(CudaEngine, StepStatsAndCheckpoint) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  const ModelConfig config = test::engine_test_config(false);
  const PairBatch batch = check_batch(config.vocab_size, 1235, true);
  for (bool bf16_params : {false, true}) {
    CudaEngine engine(*test::engine_test_model(false, 1234), engine_options(1, bf16_params));
    AdamWConfig adamw;
    for (int64_t t = 1; t <= 3; ++t) {
      engine.zero_grad();
      run_micro_batches(engine, {batch}, check_loss(), true);
      engine.optimizer_step({1e-3, 1.0, adamw, t});
      EXPECT_TRUE(engine.take_results().updated);
    }
    const CudaStepStats stats = engine.take_step_stats();
    const BatchFlopCounts counts = batch_flop_counts(batch);
    EXPECT_EQ(stats.steps, 3);
    EXPECT_GT(stats.seconds, 0.0);
    const double needed = 3 * 3 * batch_forward_flops_needed(config, counts);
    const double all_tokens = 3 * 3 * batch_forward_flops_all_tokens(config, counts);
    EXPECT_NEAR(stats.model_flops, needed, 1e-9 * needed);
    EXPECT_NEAR(stats.model_flops_all_tokens, all_tokens, 1e-9 * all_tokens);
    EXPECT_GT(stats.model_flops_all_tokens, stats.model_flops);
    const std::string out = dir.path + (bf16_params ? "/bf16" : "/fp32");
    engine.save_model(out);
    const auto loaded = model_load_hf<float>(out);
    const auto weights = engine.weights_to_cpu();
    EXPECT_EQ(std::memcmp(loaded->param_data(), weights->param_data(), weights->num_params() * sizeof(float)), 0)
        << "the checkpoint holds the engine's weights exactly";
  }
}

// ---- the compact optimizer state (kernels/adamw_compact.h) and the memory plan ----

CudaEngineOptions compact_options(int recompute, MasterKind master, MomentKind moments) {
  CudaEngineOptions o = engine_options(recompute, false);
  o.master = master;
  o.moments = moments;
  return o;
}

// `steps` optimizer steps, a fresh batch each; the loss of each step.
std::vector<double> train_steps(Engine& engine, int steps, int64_t first_t = 1) {
  const ModelConfig config = test::engine_test_config(false);
  const LossConfig loss = check_loss();
  AdamWConfig adamw;
  adamw.weight_decay = 0.1;
  std::vector<double> losses;
  for (int64_t t = first_t; t < first_t + steps; ++t) {
    engine.zero_grad();
    run_micro_batches(engine, {check_batch(config.vocab_size, 2000 + t, true)}, loss, true);
    engine.optimizer_step({1e-3, 1.0, adamw, t});
    const StepResults results = engine.take_results();
    EXPECT_TRUE(results.updated) << "step " << t;
    MetricSums sums;
    for (const PairResult& p : results.pairs) sums.add(p, loss);
    losses.push_back(sums.loss(loss));
  }
  return losses;
}

// The number of elements whose bits differ between two engines' parameters (weights: the master when there is one).
size_t differing_elements(CudaEngine& a, CudaEngine& b) {
  size_t differ = 0;
  for (size_t i = 0; i < a.num_tensors(); ++i) {
    const std::vector<float> x = a.parameter_to_host(i, false), y = b.parameter_to_host(i, false);
    for (size_t e = 0; e < x.size(); ++e) differ += std::memcmp(&x[e], &y[e], 4) != 0;
  }
  return differ;
}

// Two engines from the same weights, `steps` steps each: the same losses, gradients and weights bit for bit.
void expect_same_trajectory(const CudaEngineOptions& a_options, const CudaEngineOptions& b_options, int steps,
                            const std::string& what) {
  auto model = test::engine_test_model(false, 1234);
  CudaEngine a(*model, a_options), b(*model, b_options);
  const std::vector<double> a_losses = train_steps(a, steps), b_losses = train_steps(b, steps);
  for (int t = 0; t < steps; ++t) EXPECT_EQ(a_losses[t], b_losses[t]) << what << ": loss of step " << t + 1;
  for (size_t i = 0; i < a.num_tensors(); ++i) {
    const std::vector<float> x = a.parameter_to_host(i, true), y = b.parameter_to_host(i, true);
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << what << ": gradient of tensor " << i;
  }
  EXPECT_EQ(differing_elements(a, b), 0u) << what << ": weights";
}

// The split master is the fp32 master stored in two halves, and both write the same bf16 weights (its high half):
// the whole trajectory (losses, gradients, master weights) is the same bit for bit, with either kind of moments.
TEST(CudaEngine, SplitMasterEqualsFp32MasterOverSteps) {
  STAPO_REQUIRE_GPU();
  for (MomentKind moments : {MomentKind::fp32, MomentKind::q8})
    expect_same_trajectory(compact_options(1, MasterKind::fp32, moments), compact_options(1, MasterKind::split, moments),
                           8, cat(moments_name(moments), " moments"));
}

// How far 8-bit moments take an engine from fp32 ones over 30 steps from the same weights: the relative L2 of the
// difference in weight changes, and the largest difference of a step's loss.
struct MomentsGap {
  double change_error, loss_diff;
};

MomentsGap eight_bit_gap(Engine& fp32, Engine& q8, const CpuModel<float>& initial) {
  const std::vector<double> a = train_steps(fp32, 30), b = train_steps(q8, 30);
  MomentsGap gap{0, 0};
  for (size_t t = 0; t < a.size(); ++t) gap.loss_diff = std::max(gap.loss_diff, std::fabs(a[t] - b[t]));
  const std::vector<std::vector<float>> x = host_tensors(fp32, false), y = host_tensors(q8, false);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float* w0 = initial.parameters()[i].data;  // both engines' initial master weights
    for (size_t e = 0; e < x[i].size(); ++e) {
      const double dx = double(x[i][e]) - w0[e], dy = double(y[i][e]) - w0[e];
      num += (dx - dy) * (dx - dy);
      den += dx * dx;
    }
  }
  EXPECT_GT(den, 0.0);
  gap.change_error = std::sqrt(num / den);
  return gap;
}

// 8-bit moments on the GPU stray from fp32 ones as far as they do on the CPU engine (the twin: fp32 activations,
// the same quantisation, model and batches); what this model's CPU twin measures is the yardstick. With every
// tensor 8-bit the twin measured a weight change error of 0.713 and a loss difference of 0.346 (the H200 0.700 and
// 0.206), 92.5% of the error's square the input embedding's, whose 8-bit update missed the fp32 one by 2.2× that
// update's own size (its rows see gradients only when their token is in the batch). Since the embedding keeps
// fp32 moments (train/adamw.h's keeps_fp32_moments, as bitsandbytes' StableEmbedding) the twin measures 0.0286
// and 0.0039; its bounds are about twice that. The GPU half passed with the fp32 embedding moments on the H200's
// second lease (its numbers were not kept: ctest keeps a passing test's output out of the log); its
// margins beyond 1.5× the twin allow for bf16 activations on top (on this model a 1.7e-3 relative perturbation of
// the gradients moved 10 steps' losses by 1.29e-2 on the H200: Bf16GradientsFollowFp32Gradients).
TEST(CudaEngine, EightBitMomentsFollowFp32Moments) {
  auto model = test::engine_test_model(false, 1234);
  CpuEngine<float> cpu_fp32(test::engine_test_model(false, 1234));
  CpuEngine<float> cpu_q8(test::engine_test_model(false, 1234), nullptr, true, MomentKind::q8);
  const MomentsGap cpu = eight_bit_gap(cpu_fp32, cpu_q8, *model);
  printf("CPU twin, 8-bit vs fp32 moments, 30 steps: weight change error %.3e, largest loss difference %.3e\n",
         cpu.change_error, cpu.loss_diff);
  EXPECT_LT(cpu.change_error, 0.06);
  EXPECT_LT(cpu.loss_diff, 0.01);
  STAPO_REQUIRE_GPU();
  CudaEngine fp32(*model, compact_options(1, MasterKind::fp32, MomentKind::fp32));
  CudaEngine q8(*model, compact_options(1, MasterKind::fp32, MomentKind::q8));
  const MomentsGap gpu = eight_bit_gap(fp32, q8, *model);
  printf("GPU, 8-bit vs fp32 moments, 30 steps: weight change error %.3e, largest loss difference %.3e\n",
         gpu.change_error, gpu.loss_diff);
  EXPECT_LT(gpu.change_error, 1.5 * cpu.change_error + 0.05);
  EXPECT_LT(gpu.loss_diff, 1.5 * cpu.loss_diff + 0.03);
}

// --grads bf16: the layers' matmul-weight gradients of one micro-batch are the fp32 ones rounded to bf16 (the same
// GEMM, a bf16 output: within 2^-8 per element, ~1e-3 relative L2; tolerance 8e-3), the others (embedding,
// lm_head, norms) are fp32 and the same bit for bit; over 10 steps the losses stay within 0.03 of the fp32 run's.
// Calibrated on the first GPU run (H200): 1.68e-3 relative L2 and a largest loss difference of 1.29e-2, over the
// 0.01 guessed before it; 8-bit moments moved this model's losses by 0.2 to 0.35 while the embedding's were 8-bit
// too (the test above).
TEST(CudaEngine, Bf16GradientsFollowFp32Gradients) {
  STAPO_REQUIRE_GPU();
  const ModelConfig config = test::engine_test_config(false);
  auto model = test::engine_test_model(false, 1234);
  CudaEngineOptions bf16_options = compact_options(1, MasterKind::split, MomentKind::fp32);
  bf16_options.grads = GradKind::bf16;
  CudaEngine fp32(*model, compact_options(1, MasterKind::split, MomentKind::fp32)), bf16(*model, bf16_options);
  const std::vector<ParamSpec> specs = model_param_specs(config);
  const std::vector<PairBatch> batch = {check_batch(config.vocab_size, 1235, true)};
  const StepRecord a = step_gradients(fp32, batch, check_loss()), b = step_gradients(bf16, batch, check_loss());
  double worst = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].layer >= 0 && !specs[i].is_norm()) {
      worst = std::max(worst, relative_l2(b.grads[i], a.grads[i]));
    } else {
      EXPECT_EQ(std::memcmp(a.grads[i].data(), b.grads[i].data(), a.grads[i].size() * sizeof(float)), 0)
          << specs[i].name << ": an fp32 gradient differs";
    }
  }
  EXPECT_LT(worst, 8e-3) << "bf16 matmul-weight gradients vs fp32";
  CudaEngine fp32_run(*model, compact_options(1, MasterKind::split, MomentKind::fp32)), bf16_run(*model, bf16_options);
  const std::vector<double> x = train_steps(fp32_run, 10), y = train_steps(bf16_run, 10);
  double loss_diff = 0;
  for (size_t t = 0; t < x.size(); ++t) loss_diff = std::max(loss_diff, std::fabs(x[t] - y[t]));
  printf("bf16 gradients: worst matmul-weight gradient %.2e relative L2; 10 steps, largest loss difference %.2e\n",
         worst, loss_diff);
  EXPECT_LT(loss_diff, 0.03);
}

// --grad-first-write: the step's first backward writes every gradient (β = 0 GEMMs, dweight =, the lm_head's first
// chunk; the embedding's tensor zeroed unless tied) instead of adding to a memset buffer. Against the memset engine
// on two micro-batches (a write, then an add), untied (llama) and tied (mistral): the same gradients (cuBLASLt may
// pick another algorithm for β = 0, so the GEMM-written ones — layer matmuls, lm_head, a tied embedding — are
// compared to 1e-5 relative L2, the norms' and an untied embedding's exactly); then a
// zero_grad with no backward after it must leave zero gradients (settle_grads), and 3 steps the same losses to 1e-4.
TEST(CudaEngine, GradFirstWriteEqualsMemset) {
  STAPO_REQUIRE_GPU();
  for (bool mistral : {false, true}) {
    const ModelConfig config = test::engine_test_config(mistral);
    auto model = test::engine_test_model(mistral, 1234);
    CudaEngineOptions write_options = engine_options(1, false);
    write_options.paths.grad_first_write = true;
    CudaEngine memset(*model, engine_options(1, false)), write(*model, write_options);
    const std::vector<PairBatch> batches = {check_batch(config.vocab_size, 1235, true),
                                            check_batch(config.vocab_size, 1236, false)};
    const StepRecord a = step_gradients(memset, batches, check_loss()), b = step_gradients(write, batches, check_loss());
    const std::vector<ParamSpec> specs = model_param_specs(config);
    double worst = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      // Written by a GEMM: the layers' matmul weights, the lm_head, and the embedding when tied to it.
      const bool gemm = !specs[i].is_norm() && (specs[i].layer >= 0 || specs[i].role != ParamRole::embed || mistral);
      if (gemm) {
        worst = std::max(worst, relative_l2(b.grads[i], a.grads[i]));
      } else {
        EXPECT_TRUE(b.grads[i] == a.grads[i]) << specs[i].name << ": gradient differs";
      }
    }
    EXPECT_LT(worst, 1e-5) << "GEMM-written gradients, first write vs memset";
    write.zero_grad();
    size_t nonzero = 0;
    for (size_t i = 0; i < write.num_tensors(); ++i)
      for (float x : write.parameter_to_host(i, true)) nonzero += x != 0.0f;
    EXPECT_EQ(nonzero, 0u) << "gradients after a zero_grad without a backward";
    CudaEngine memset_run(*model, engine_options(1, false)), write_run(*model, write_options);
    const std::vector<double> x = train_steps(memset_run, 3), y = train_steps(write_run, 3);
    for (size_t t = 0; t < x.size(); ++t) EXPECT_NEAR(x[t], y[t], 1e-4) << "loss of step " << t + 1;
    printf("first write vs memset (%s): worst GEMM-written gradient %.2e relative L2, step-3 losses %.6f %.6f\n",
           mistral ? "mistral, tied" : "llama", worst, x.back(), y.back());
  }
}

// AdamW in one launch runs the per-tensor launches' block code on the same tensors: the same trajectory bit for bit,
// for every master and moment kind, with bf16 gradients too.
TEST(CudaEngine, AdamWMultiTensorEqualsPerTensorLaunches) {
  STAPO_REQUIRE_GPU();
  for (MasterKind master : {MasterKind::fp32, MasterKind::split, MasterKind::none})
    for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
      CudaEngineOptions per_tensor = compact_options(1, master, moments);
      if (moments == MomentKind::q8) per_tensor.grads = GradKind::bf16;
      CudaEngineOptions one_launch = per_tensor;
      one_launch.paths.adamw_multi_tensor = true;
      expect_same_trajectory(per_tensor, one_launch, 4,
                             cat(master_name(master), " master, ", moments_name(moments), " moments, ",
                                 grads_name(per_tensor.grads), " gradients: one AdamW launch"));
    }
}

// Recompute levels run the same kernels on the same values: the same trajectory bit for bit, with the compact
// state too.
TEST(CudaEngine, RecomputeLevelsGiveTheSameTrajectory) {
  STAPO_REQUIRE_GPU();
  expect_same_trajectory(compact_options(0, MasterKind::split, MomentKind::q8),
                         compact_options(2, MasterKind::split, MomentKind::q8), 4, "recompute 0 vs 2");
}

// --cuda-graph replays the launches it captured: the same trajectory bit for bit as launching them (the plain
// engine: the device-built embedding index and AdamW's table it implies are the host build's and the per-tensor
// launches' bit for bit). Two micro-batches of different shapes per step (two keys per model piece), 6 steps
// (eager, captured, then replays), a learning rate that changes every step (AdamW's constants must reach the replayed
// launch through its table). Cases: the defaults; and bf16 weights with stochastic rounding (fresh seeds per step),
// 8-bit moments (two AdamW tables), bf16 gradients, first-write gradients (a key of its own for the step's first
// backward), recompute 2. The graph counts show the replays happened.
TEST(CudaEngine, CudaGraphEqualsLaunchingEachKernel) {
  STAPO_REQUIRE_GPU();
  const ModelConfig config = test::engine_test_config(false);
  auto model = test::engine_test_model(false, 1234);
  CudaEngineOptions lean = compact_options(2, MasterKind::none, MomentKind::q8);
  lean.grads = GradKind::bf16;
  lean.paths.grad_first_write = true;
  for (const CudaEngineOptions& eager_options : {engine_options(1, false), lean}) {
    CudaEngineOptions graph_options = eager_options;
    graph_options.paths.cuda_graph = true;
    CudaEngine eager(*model, eager_options), graphed(*model, graph_options);
    const std::string what = cat("--cuda-graph", eager_options.paths.description());
    const int steps = 6;
    for (int64_t t = 1; t <= steps; ++t) {
      const std::vector<PairBatch> batches = {check_batch(config.vocab_size, 3000 + t, true),
                                              check_batch(config.vocab_size, 4000 + t, false)};
      AdamWConfig adamw;
      adamw.weight_decay = 0.1;
      const OptimizerUpdate update{1e-3 * double(t), 1.0, adamw, t};
      double loss[2], norm[2];
      int e = 0;
      for (Engine* engine : {(Engine*)&eager, (Engine*)&graphed}) {
        engine->zero_grad();
        run_micro_batches(*engine, batches, check_loss(), true);
        engine->optimizer_step(update);
        const StepResults results = engine->take_results();
        EXPECT_TRUE(results.updated) << what << ", step " << t;
        MetricSums sums;
        for (const PairResult& p : results.pairs) sums.add(p, check_loss());
        loss[e] = sums.loss(check_loss());
        norm[e++] = results.grad_norm;
      }
      EXPECT_EQ(loss[0], loss[1]) << what << ": loss of step " << t;
      EXPECT_EQ(norm[0], norm[1]) << what << ": gradient norm of step " << t;
    }
    for (size_t i = 0; i < eager.num_tensors(); ++i) {
      const std::vector<float> x = eager.parameter_to_host(i, true), y = graphed.parameter_to_host(i, true);
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << what << ": gradient of tensor " << i;
    }
    EXPECT_EQ(differing_elements(eager, graphed), 0u) << what << ": weights";
    // The model's pieces: 2 keys (the batch shapes), but the second shape's first forward (step 1) grows the
    // activation arena, which drops the graphs of the first (they read the old arena): the first shape runs eagerly
    // again at step 2, is captured at step 3; the second is captured at step 2. The optimizer's: 1 key.
    const std::string summary = graphed.graph_summary();
    printf("%s: %s\n", what.c_str(), summary.c_str());
    EXPECT_EQ(summary, "forward: 2 captured, 7 replays, 3 eager runs, 0 evicted (at most 8 keys); "
                       "backward: 2 captured, 7 replays, 3 eager runs, 0 evicted (at most 8 keys); "
                       "gradient norm: 1 captured, 4 replays, 1 eager runs, 0 evicted (at most 8 keys); "
                       "AdamW update: 1 captured, 4 replays, 1 eager runs, 0 evicted (at most 8 keys)");
    PhaseTimer timer(graphed.stream());
    EXPECT_THROW(graphed.set_phase_timer(&timer), Error) << "--phases with --cuda-graph";
  }
}

// --cuda-graph refuses what it cannot capture, before anything is allocated (no device needed): cuDNN's attention.
TEST(CudaEngine, CudaGraphRefusesCudnnAttention) {
  CudaEngineOptions options = engine_options(1, false, AttentionPath::cudnn);
  options.paths.cuda_graph = true;
  try {
    CudaEngine engine(test::engine_test_config(false), options);
    FAIL() << "--cuda-graph with --attention cudnn was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--cuda-graph and --attention cudnn"), std::string::npos) << e.what();
  }
}

// CudaGraphs (train/cuda_graph.h) on its own: a captured piece replays the launch it recorded (a memset's value is
// the capture's, whatever the host holds later); a piece that waits for the stream or allocates fails its capture
// with an error naming the piece and --cuda-graph, and leaves the stream usable.
TEST(CudaEngine, CudaGraphsReplayTheCaptureAndRefuseForbiddenCalls) {
  STAPO_REQUIRE_GPU();
  cudaStream_t stream;
  cudaCheck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  uint8_t* x = device_alloc_zeroed<uint8_t>(16, stream);
  auto read = [&] {
    uint8_t host[16];
    cudaCheck(cudaMemcpyAsync(host, x, 16, cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    return std::vector<int>(host, host + 16);
  };
  {
    CudaGraphs graphs("test piece", stream);
    int value = 3;
    auto fill = [&] { cudaCheck(cudaMemsetAsync(x, value, 16, stream)); };
    graphs.run(GraphKey{{0}}, fill);  // eager
    EXPECT_EQ(read(), std::vector<int>(16, 3));
    value = 4;
    graphs.run(GraphKey{{0}}, fill);  // captured with 4, launched
    EXPECT_EQ(read(), std::vector<int>(16, 4));
    value = 5;
    cudaCheck(cudaMemsetAsync(x, 0, 16, stream));
    graphs.run(GraphKey{{0}}, fill);  // replayed: the captured 4
    EXPECT_EQ(read(), std::vector<int>(16, 4)) << "a replay runs the captured launch, not the host code";
    const std::vector<std::pair<const char*, std::function<void()>>> forbidden = {
        {"a stream synchronisation", [&] { cudaCheck(cudaStreamSynchronize(stream)); }},
        {"an allocation", [&] {
           void* p = nullptr;
           cudaCheck(cudaMalloc(&p, 16));
           cudaCheck(cudaFree(p));
         }}};
    for (size_t i = 0; i < forbidden.size(); ++i) {
      const GraphKey key{{1 + (int64_t)i}};
      auto work = [&] {
        fill();
        forbidden[i].second();
      };
      graphs.run(key, work);  // eager: allowed
      try {
        graphs.run(key, work);
        ADD_FAILURE() << forbidden[i].first << " inside a capture was accepted";
      } catch (const Error& e) {
        printf("%s inside a capture: %s\n", forbidden[i].first, e.what());
        EXPECT_NE(std::string(e.what()).find("--cuda-graph: capturing the test piece failed"), std::string::npos);
      }
      value = 6 + (int)i;
      fill();  // the stream works after the failed capture
      EXPECT_EQ(read(), std::vector<int>(16, value)) << "after " << forbidden[i].first;
    }
  }
  cudaCheck(cudaFree(x));
  cudaCheck(cudaStreamDestroy(stream));
}

// Save after 3 steps, resume into a new engine, 3 more steps: the same weights as 6 steps in one go, for every
// master and moment kind (the split master saves its exact fp32 value, 8-bit moments their codes and absmax).
TEST(CudaEngine, ResumeWithCompactStateIsExact) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  auto model = test::engine_test_model(false, 1234);
  for (MasterKind master : {MasterKind::fp32, MasterKind::split, MasterKind::none})
    for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
      const std::string what = cat(master_name(master), " master, ", moments_name(moments), " moments");
      const CudaEngineOptions options = compact_options(1, master, moments);
      CudaEngine straight(*model, options), first(*model, options);
      train_steps(straight, 6);
      train_steps(first, 3);
      const std::string out = dir.path + "/" + master_name(master) + moments_name(moments);
      first.save_model(out);
      first.save_optimizer(out + "/optimizer.bin");
      CudaEngine resumed(*model_load_hf<float>(out), options);
      resumed.load_optimizer(out + "/optimizer.bin");
      train_steps(resumed, 3, 4);
      EXPECT_EQ(differing_elements(straight, resumed), 0u) << what;
    }
}

// What the engine brings into use stays within the plan (train/memory_plan.h) for its flags; the plan's items are
// the allocations themselves plus a fixed allowance, so on a tiny model the measured use is close below it.
TEST(CudaEngine, MemoryPlanBoundsWhatIsAllocated) {
  STAPO_REQUIRE_GPU();
  const ModelConfig config = test::engine_test_config(false);
  auto model = test::engine_test_model(false, 1234);
  const PairBatch batch = check_batch(config.vocab_size, 1235, true);
  for (int recompute : {0, 2})
    for (MasterKind master : {MasterKind::fp32, MasterKind::split})
      for (MomentKind moments : {MomentKind::fp32, MomentKind::q8}) {
        CudaEngineOptions options = compact_options(recompute, master, moments);
        options.grads = moments == MomentKind::q8 ? GradKind::bf16 : GradKind::fp32;  // both kinds, fewer engines
        if (recompute == 2) options = with_step_paths(options);  // the device-built embedding index's buffers too
        // The plan counts 2·pairs·T tokens; check_batch's 3 rows of 32 fit in 2 pairs of 32.
        options.max_tokens = 2 * 2 * batch.tokens.T;
        const uint64_t planned =
            memory_plan(config, cuda_engine_plan_input(config, options, 2, batch.tokens.T)).total();
        CudaEngine engine(*model, options);
        train_steps(engine, 2);
        const double used = engine.take_step_stats().peak_bytes;
        printf("recompute %d, %s master, %s moments, %s gradients%s: planned %.1f MiB, used at most %.1f MiB\n",
               recompute, master_name(master), moments_name(moments), grads_name(options.grads),
               options.paths.description().c_str(), planned / 1048576.0, used / 1048576.0);
        EXPECT_LE(used, double(planned));
      }
}

// --memory-cap-gib: once the engine exists, the device has no more than the cap free for it, cuBLAS and cuDNN.
TEST(CudaEngine, MemoryCapLeavesNoMoreThanTheCap) {
  STAPO_REQUIRE_GPU();
  CudaEngineOptions options = compact_options(1, MasterKind::split, MomentKind::q8);
  options.memory_cap_bytes = 1ull << 30;
  CudaEngine engine(*test::engine_test_model(false, 1234), options);
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  EXPECT_LE(free_bytes, options.memory_cap_bytes);
  EXPECT_LT(engine.device_bytes_in_use(), double(options.memory_cap_bytes)) << "the reservation is not counted";
  train_steps(engine, 1);
}

// Data parallel (train/cuda_zero.h) at W = 1, the only world size one GPU allows (NCCL refuses two ranks on one
// GPU): the engine over an NCCL communicator runs every collective of the data-parallel step (reduce-scatter or
// all-reduce of the gradients, the all-reduce of the norm's partials and the non-finite flag, the all-gather of the
// bf16 weights, the checkpoint's gather) and must equal the engine without one bit for bit: three steps of two
// micro-batches with both weight modes, ZeRO-1 on and off, and the gradients reduced after the backward or bucket
// by bucket during the last one (zero_overlap: ncclReduce of each bucket's pieces on a second stream; step 2 does
// not mark its last micro-batch, so the buckets are reduced in optimizer_step instead), then a checkpoint after
// step 2 resumed into a fresh engine for step 3; with the default step paths. Several ranks: dev/multi_gpu_check.sh.
TEST(CudaEngine, NcclOneRankEqualsOneProcess) {
  STAPO_REQUIRE_GPU();
  test::TempDir dir;
  const ModelConfig config = test::engine_test_config(false);
  const LossConfig loss = check_loss();
  AdamWConfig adamw;
  adamw.weight_decay = 0.1;
  auto step = [&](Engine& engine, int64_t t) {
    const std::vector<PairBatch> micro = {check_batch(config.vocab_size, 1300 + uint64_t(t), true),
                                          check_batch(config.vocab_size, 1400 + uint64_t(t), false)};
    engine.zero_grad();
    if (t == 2) {  // StepScale::last left false
      const StepScale scale = step_scale(micro, loss);
      for (const PairBatch& b : micro) engine.run_pairs(b, loss, scale, true);
    } else {
      run_micro_batches(engine, micro, loss, true);
    }
    engine.optimizer_step({1e-3, t == 2 ? 0.0 : 1e-3, adamw, t});  // steps 1 and 3 clipped (checked below), 2 not
    return engine.take_results();
  };
  auto expect_same_engine = [](CudaEngine& got, CudaEngine& want, const std::string& what) {
    for (bool grad : {false, true}) {
      const auto a = host_tensors(got, grad), b = host_tensors(want, grad);
      for (size_t i = 0; i < b.size(); ++i)
        EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), b[i].size() * sizeof(float)), 0)
            << what << ": " << (grad ? "gradient" : "weights") << " of tensor " << i << " differ";
    }
  };
  for (bool bf16_params : {false, true})
    for (bool zero1 : {true, false})
      for (bool overlap : {false, true}) {
        const std::string what = cat(bf16_params ? "bf16 weights" : "fp32 master", zero1 ? ", ZeRO-1" : ", all-reduce",
                                     overlap ? ", overlapped" : "");
        const std::unique_ptr<Collective> ranks = collective_nccl(DistributedEnv{}, NcclOptions{});
        CudaEngineOptions single = engine_options(1, bf16_params);
        single.paths = StepPaths{};  // the default paths, what a data-parallel run takes unless told otherwise
        CudaEngineOptions parallel = single;
        parallel.data_parallel = ranks.get();
        parallel.zero1 = zero1;
        parallel.zero_overlap = overlap;
        const auto model = test::engine_test_model(false, 1234);
        CudaEngine one(*model, single), nccl(*model, parallel);
        const std::string saved =
            dir.path + "/" + std::to_string(int(bf16_params)) + std::to_string(int(zero1)) + std::to_string(int(overlap));
        for (int64_t t = 1; t <= 3; ++t) {
          const StepResults want = step(one, t), got = step(nccl, t);
          test::expect_same_results(got.pairs, want.pairs, what);
          EXPECT_TRUE(got.updated) << what;
          EXPECT_EQ(got.grad_norm, want.grad_norm) << what << ", step " << t;
          EXPECT_GT(want.grad_norm, 1e-3) << "the clip at 1e-3 should bite";
          expect_same_engine(nccl, one, cat(what, ", step ", t));
          if (t == 2) {
            nccl.save_model(saved);
            nccl.save_optimizer(saved + "/optimizer.bin");
          }
        }
        // The checkpoint resumed: step 3 again from step 2's files.
        CudaEngine resumed(*model_load_hf<float>(saved), parallel);
        resumed.load_optimizer(saved + "/optimizer.bin");
        step(resumed, 3);
        expect_same_engine(resumed, one, what + ", resumed at step 2");
        EXPECT_NE(nccl.description().find("data parallel over 1 ranks (nccl)"), std::string::npos) << nccl.description();
        EXPECT_EQ(nccl.description().find("buckets during the backward") != std::string::npos, overlap)
            << nccl.description();
        if (overlap) {  // a backward after the step's last one would add to gradients being reduced: refused
          const std::vector<PairBatch> micro = {check_batch(config.vocab_size, 1500, true)};
          nccl.zero_grad();
          run_micro_batches(nccl, micro, loss, true);
          EXPECT_THROW(nccl.run_pairs(micro[0], loss, step_scale(micro, loss), true), Error) << what;
        }
      }
}

}  // namespace
}  // namespace stapo
