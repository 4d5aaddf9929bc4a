// The CUDA engine (train/cuda_engine.h): the loss, the optimizer, checkpoints and statistics around CudaModel.
// Everything runs on one non-blocking stream. The host waits for it in take_results (the step's results),
// take_step_stats, and where it reads parameters or moments (checkpoints, weights_to_cpu) — and, rarely, when a
// buffer grows.
#include "train/cuda_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unistd.h>

#include "common/error.h"
#include "common/file_io.h"
#include "kernels/adamw_compact.h"
#include "kernels/cuda_common.h"
#include "kernels/embedding.h"
#include "kernels/grad_norm.h"
#include "kernels/lm_head.h"
#include "kernels/matmul.h"
#include "kernels/preference_loss.h"
#include "kernels/random_init.h"
#include "kernels/rmsnorm.h"
#include "model/safetensors.h"
#include "train/model_flops.h"
#include "train/optimizer_state.h"

namespace stapo {

using bf16 = __nv_bfloat16;

// ---- memory ----

// The paths the engine runs: --cuda-graph takes the embedding gradient's index built on the device (the host
// build's group count sets the backward's grid: a host value per batch) and AdamW's table (the per-tensor launches
// take the step's constants as arguments). Both are bit for bit the paths they replace.
StepPaths cuda_graph_paths(StepPaths paths) {
  if (paths.cuda_graph) paths.device_embedding_index = paths.adamw_multi_tensor = true;
  return paths;
}

MemoryPlanInput cuda_engine_plan_input(const ModelConfig& config, const CudaEngineOptions& options, int batch_size,
                                       int max_length) {
  MemoryPlanInput in;
  in.master = options.master;
  in.moments = options.moments;
  in.grads = options.grads;
  in.recompute = options.recompute;
  in.fused_projections = options.paths.fused_projections;
  in.attention_dq_accumulator = options.attention == AttentionPath::flash2_atomic;
  in.batch_size = batch_size;
  in.max_length = max_length;
  in.ranks = CudaZero::shards(options.data_parallel);
  in.zero1 = options.zero1;
  const int C = config.hidden_size;
  in.workspaces = {
      {"cuBLASLt workspace", kMatmulWorkspaceBytes, "kernels/matmul.h"},
      {"lm_head workspace", lm_head_workspace_bytes(C, options.lm_head_chunk_rows, options.lm_head_chunk_vocab),
       cat(options.lm_head_chunk_rows, " rows x ", options.lm_head_chunk_vocab, " vocabulary columns per chunk")},
      {"RMSNorm scratch", rmsnorm_backward_scratch_floats(C) * sizeof(float), "kernels/rmsnorm.h"},
      {"grad-norm partials", GRAD_NORM_BLOCKS * sizeof(float), "kernels/grad_norm.h"}};
  if (cuda_graph_paths(options.paths).device_embedding_index)
    in.workspaces.push_back({"embedding index, device build",
                             embedding_grad_index_device_bytes(2 * batch_size * max_length),
                             "sorted tokens, positions, CUB's sort storage (bound): kernels/embedding.h"});
  if (options.attention == AttentionPath::cudnn)
    in.workspaces.push_back({"cuDNN attention", 0, "its workspace is sized by cuDNN at run time: not counted"});
  return in;
}

uint64_t cuda_engine_available_bytes(uint64_t cap_bytes) {
  std::string why;
  STAPO_CHECK(cuda_device_available(&why), "no CUDA device: ", why, ". Use ./train_stapo_cpu on the CPU, or "
              "--dry-run to print the memory plan without a device.");
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (cap_bytes == 0) return free_bytes;
  // A card of cap_bytes in all: what is in use already (the CUDA context, other processes) comes out of it.
  const uint64_t used = total_bytes - free_bytes;
  return std::min<uint64_t>(free_bytes, cap_bytes > used ? cap_bytes - used : 0);
}

// ---- construction ----

CudaModelOptions CudaEngine::model_options(const CudaEngineOptions& o) {
  CudaModelOptions m;
  m.recompute = o.recompute;
  m.max_tokens = o.max_tokens;
  m.lm_head_chunk_rows = o.lm_head_chunk_rows;
  m.lm_head_chunk_vocab = o.lm_head_chunk_vocab;
  m.attention = o.attention;
  m.grads = o.grads;
  m.shards = CudaZero::shards(o.data_parallel);
  m.paths = o.paths;
  return m;
}

AdamWState CudaEngine::tensor_state(size_t i) const {
  const ShardRange mine = ranks_->updates();
  const size_t offset = model_->offsets()[i];
  const ShardRange part = range_overlap(mine, offset, model_->specs()[i].numel);
  AdamWState s;
  if (part.count == 0) return s;
  const size_t at = part.begin - mine.begin;  // into the state arrays, which start at mine.begin
  s.n = part.count;
  s.index_base = part.begin - offset;
  s.weights = reinterpret_cast<uint16_t*>(model_->params() + part.begin);
  if (master_) s.master = master_ + at;
  if (low_) s.low = low_ + at;
  if (options_.moments == MomentKind::fp32) {
    s.m = m_ + at;
    s.v = v_ + at;
  } else if (q8_layout_.kind[i] == MomentKind::fp32) {  // one rank: the whole tensor, at its place in the layout
    s.m = m_ + q8_layout_.offset[i];
    s.v = v_ + q8_layout_.offset[i];
  } else {
    s.m_code = m_code_ + q8_layout_.offset[i];
    s.v_code = v_code_ + q8_layout_.offset[i];
    s.m_absmax = m_absmax_ + q8_layout_.block[i];
    s.v_absmax = v_absmax_ + q8_layout_.block[i];
  }
  return s;
}

CudaEngine::CudaEngine(const CpuModel<float>& model, const CudaEngineOptions& options)
    : CudaEngine(model.config(), &model, options) {}

CudaEngine::CudaEngine(const ModelConfig& config, const CudaEngineOptions& options)
    : CudaEngine(config, nullptr, options) {}

CudaEngine::CudaEngine(const ModelConfig& config, const CpuModel<float>* weights, const CudaEngineOptions& options)
    : options_(options) {
  const std::string refused = data_parallel_unsupported(cuda_engine_plan_input(config, options, 1, 2));
  STAPO_CHECK(refused.empty(), "CudaEngine: ", refused);
  if (options.paths.cuda_graph) {
    STAPO_CHECK(!options.data_parallel, "--cuda-graph and data parallel (mpirun/srun with more than one rank): the "
                "gradient reduction is not captured (NCCL calls, and --zero-overlap's hooks run on the host during "
                "the backward); drop --cuda-graph or run one process");
    STAPO_CHECK(options.attention != AttentionPath::cudnn, "--cuda-graph and --attention cudnn: cuDNN's attention "
                "zeroes each row's padding with launches sized from the batch's sequence lengths on the host, and "
                "grows its workspace as it goes; use --attention flash2 or flash, or drop --cuda-graph");
    options_.paths = cuda_graph_paths(options.paths);
  }
  std::string why;
  STAPO_CHECK(cuda_device_available(&why), "no CUDA device: ", why, ". Use ./train_stapo_cpu on the CPU.");
  if (options_.peak_tflops <= 0) options_.peak_tflops = peak_bf16_tflops(cuda_device_description());
  cudaCheck(cudaFree(nullptr));  // creates the context, so the baseline below includes it
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  baseline_used_ = total_bytes - free_bytes;
  const uint64_t available = cuda_engine_available_bytes(options_.memory_cap_bytes);
  if (available < free_bytes) {  // the cap: reserve the rest
    cudaCheck(cudaMalloc(&ballast_, free_bytes - available));
    baseline_used_ += free_bytes - available;  // the engine's own use is measured without it
  }
  cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  model_ = std::make_unique<CudaModel>(config, model_options(options_), stream_);
  if (options_.paths.cuda_graph) {
    norm_graphs_ = std::make_unique<CudaGraphs>("gradient norm", stream_);
    adamw_graphs_ = std::make_unique<CudaGraphs>("AdamW update", stream_);
  }

  ranks_ = std::make_unique<CudaZero>(
      options.data_parallel, options.zero1, options.zero_overlap, model_->buffer_elements(),
      grad_bucket_bounds(model_->specs(), model_->offsets(), model_->buffer_elements()), stream_);
  model_->set_grads_ready([this](int bucket) { ranks_->bucket_ready(bucket, model_->grads()); });
  const std::vector<ParamSpec>& specs = model_->specs();
  const std::vector<size_t>& offsets = model_->offsets();
  const size_t mine = ranks_->updates().count;  // elements of this rank's optimizer state
  if (options.master == MasterKind::fp32) master_ = device_alloc_zeroed<float>(mine, stream_);
  if (options.master == MasterKind::split) low_ = device_alloc_zeroed<int16_t>(mine, stream_);
  if (options.moments == MomentKind::fp32) {
    m_ = device_alloc_zeroed<float>(mine, stream_);
    v_ = device_alloc_zeroed<float>(mine, stream_);
  } else {  // one rank (data_parallel_unsupported): the whole model, each tensor at its place in q8_layout_
    q8_layout_ = q8_moment_layout(specs, kParamAlign);
    const Q8MomentLayout& q = q8_layout_;
    m_ = device_alloc_zeroed<float>(q.fp32_elements, stream_);
    v_ = device_alloc_zeroed<float>(q.fp32_elements, stream_);
    m_code_ = device_alloc_zeroed<uint8_t>(q.code_elements, stream_);
    v_code_ = device_alloc_zeroed<uint8_t>(q.code_elements, stream_);
    m_absmax_ = device_alloc_zeroed<float>(q.blocks, stream_);  // absmax 0: every moment decodes to 0
    v_absmax_ = device_alloc_zeroed<float>(q.blocks, stream_);
  }
  norm_partials_ = device_alloc_zeroed<float>(GRAD_NORM_BLOCKS + 1, stream_);
  scalars_ = device_alloc_zeroed<StepScalars>(1, stream_);
  cudaCheck(cudaMallocHost(&host_scalars_, sizeof(StepScalars)));
  *host_scalars_ = StepScalars{};
  cudaCheck(cudaEventCreateWithFlags(&results_ready_, cudaEventDisableTiming));

  // Weights go through an fp32 staging buffer (the master copy when this rank holds all of it, else the start of
  // the fp32 gradients, which holds the largest tensor: one tensor at a time, zeroed after) and from there into
  // the bf16 weights of the whole tensor and this rank's part of the optimizer state (the master or its low
  // halves). Every rank builds the whole model alone, without a collective.
  float* whole_master = ranks_->holds_whole() ? master_ : nullptr;
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    float* staging = whole_master ? whole_master + offsets[i] : model_->grads();
    if (weights) {
      const Parameter<float>& p = weights->parameters()[i];
      STAPO_CHECK(p.name == s.name && p.numel == s.numel, "CudaEngine: the host model's tensor ", i, " is ", p.name,
                  ", expected ", s.name);
      cudaCheck(cudaMemcpyAsync(staging, p.data, s.numel * sizeof(float), cudaMemcpyHostToDevice, stream_));
    } else {
      random_normal_fill(staging, s.numel, s.is_norm() ? 1.0f : 0.0f, s.is_norm() ? 0.0f : options.init_stddev,
                         mix64(options.seed ^ mix64(i)), stream_);
    }
    const AdamWState part = tensor_state(i);
    if (part.n < s.numel) {  // ZeRO-1: the bf16 weights of the whole tensor first
      AdamWState tensor;
      tensor.n = s.numel;
      tensor.weights = reinterpret_cast<uint16_t*>(model_->params() + offsets[i]);
      adamw_compact_init(tensor, MasterKind::none, staging, stream_);
    }
    if (part.n > 0) adamw_compact_init(part, options.master, staging + part.index_base, stream_);
  }
  if (!whole_master) model_->clear_grads();  // the staging left values in the padding too
  cudaCheck(cudaStreamSynchronize(stream_));  // the host model may be freed once we return
  last_report_ = std::chrono::steady_clock::now();
  sample_memory();
}

CudaEngine::~CudaEngine() {
  if (options_.paths.cuda_graph) fprintf(stderr, "cuda graphs: %s\n", graph_summary().c_str());
  try {  // a destructor must not throw; the process is usually exiting when this fails
    cudaCheck(cudaStreamSynchronize(stream_));
    norm_graphs_.reset();
    adamw_graphs_.reset();
    model_.reset();
    for (void* p : {(void*)master_, (void*)low_, (void*)m_, (void*)v_, (void*)m_code_, (void*)v_code_,
                    (void*)m_absmax_, (void*)v_absmax_, (void*)norm_partials_, (void*)scalars_, (void*)dseq_,
                    (void*)reference_logps_, (void*)dprompt_, ballast_})
      if (p) cudaCheck(cudaFree(p));
    if (host_scalars_) cudaCheck(cudaFreeHost(host_scalars_));
    free_slots(slots_, false);
    free_slots(host_slots_, true);
    for (const TimedStep& s : timed_steps_) free_events_.insert(free_events_.end(), {s.start, s.end});
    if (step_open_) free_events_.push_back(open_step_.start);
    for (cudaEvent_t e : free_events_) cudaCheck(cudaEventDestroy(e));
    cudaCheck(cudaEventDestroy(results_ready_));
    cudaCheck(cudaStreamDestroy(stream_));
  } catch (const Error& e) {
    fprintf(stderr, "warning: releasing the CUDA engine: %s\n", e.what());
  }
}

// ---- the loss on the device ----

void CudaEngine::ensure_slots(int pairs) {
  if (pairs <= slots_.capacity) return;
  const int capacity = std::max({pairs, 2 * slots_.capacity, 256});
  PairSlots grown;
  grown.capacity = capacity;
  grown.seq_logp = device_alloc_zeroed<float>(2 * (size_t)capacity, stream_);
  grown.seq_entropy = device_alloc_zeroed<float>(2 * (size_t)capacity, stream_);
  grown.seq_tokens = device_alloc_zeroed<float>(2 * (size_t)capacity, stream_);
  grown.seq_prompt_logp = device_alloc_zeroed<float>(2 * (size_t)capacity, stream_);
  grown.seq_prompt_tokens = device_alloc_zeroed<float>(2 * (size_t)capacity, stream_);
  grown.losses = device_alloc_zeroed<PairLoss<float>>(capacity, stream_);
  copy_slots(grown, slots_, pending_pairs_, cudaMemcpyDeviceToDevice);  // the pairs already there move along
  cudaCheck(cudaStreamSynchronize(stream_));  // the old slots and their pinned copies are no longer in use
  free_slots(slots_, false);
  free_slots(host_slots_, true);
  slots_ = grown;
  host_slots_.capacity = capacity;
  cudaCheck(cudaMallocHost(&host_slots_.seq_logp, 2 * (size_t)capacity * sizeof(float)));
  cudaCheck(cudaMallocHost(&host_slots_.seq_entropy, 2 * (size_t)capacity * sizeof(float)));
  cudaCheck(cudaMallocHost(&host_slots_.seq_tokens, 2 * (size_t)capacity * sizeof(float)));
  cudaCheck(cudaMallocHost(&host_slots_.seq_prompt_logp, 2 * (size_t)capacity * sizeof(float)));
  cudaCheck(cudaMallocHost(&host_slots_.seq_prompt_tokens, 2 * (size_t)capacity * sizeof(float)));
  cudaCheck(cudaMallocHost(&host_slots_.losses, (size_t)capacity * sizeof(PairLoss<float>)));
  results_copied_ = false;  // the host copies were dropped
}

void CudaEngine::ensure_batch_sequences(int sequences) {
  if (sequences <= batch_sequence_capacity_) return;
  cudaCheck(cudaStreamSynchronize(stream_));  // the old buffers are no longer in use
  for (float** p : {&dseq_, &reference_logps_, &dprompt_}) {
    if (*p) cudaCheck(cudaFree(*p));
    *p = device_alloc_zeroed<float>(sequences, stream_);
  }
  batch_sequence_capacity_ = sequences;
}

void CudaEngine::run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) {
  CudaModel& model = *model_;
  // The chosen prompt's log-prob, for an NLL term over prompt + response (TRL's ORPO): its rows join the lm_head's.
  const bool prompt = loss_uses_prompt(loss);
  STAPO_CHECK(pending_pairs_ == 0 || prompt == pending_prompt_, "CudaEngine: pairs with and without an NLL over "
              "prompt + response between two take_results (one loss per step and per evaluation)");
  if (batch.num_pairs == 0) return pair_batch_validate(batch, model.config().vocab_size);  // nothing to run
  model.forward(batch, prompt);  // validates the batch (its last phase, lm_head_loss, also covers the loss below)
  const int pairs = batch.num_pairs, sequences = 2 * pairs, M = model.response_rows();
  ensure_slots(pending_pairs_ + pairs);
  ensure_batch_sequences(sequences);
  const size_t first = 2 * (size_t)pending_pairs_;  // this batch's first sequence slot
  float *seq_logp = slots_.seq_logp + first, *seq_tokens = slots_.seq_tokens + first;
  sequence_sums(seq_logp, slots_.seq_entropy + first, seq_tokens, model.logp(), model.entropy(),
                model.response_sequence(), M, sequences, stream_);
  float* seq_prompt_logp = prompt ? slots_.seq_prompt_logp + first : nullptr;
  if (prompt)
    sequence_sums(seq_prompt_logp, nullptr, slots_.seq_prompt_tokens + first, model.logp(), nullptr,
                  model.prompt_sequence(), M, sequences, stream_);
  const bool have_reference = !batch.reference_logps.empty();
  if (have_reference)
    staging_.upload({{reference_logps_, batch.reference_logps.data(), sequences * sizeof(float)}}, stream_);
  pair_loss(slots_.losses + pending_pairs_, dseq_, seq_logp, seq_tokens, have_reference ? reference_logps_ : nullptr,
            loss, (float)scale.nll_weight(), (float)(1.0 / scale.pairs), pairs, &scalars_->nonfinite_loss, stream_,
            seq_prompt_logp, prompt ? dprompt_ : nullptr);
  pending_pairs_ += pairs;
  pending_prompt_ = prompt;
  pending_ids_.insert(pending_ids_.end(), batch.pair_ids.begin(), batch.pair_ids.end());
  if (have_reference)
    pending_refs_.insert(pending_refs_.end(), batch.reference_logps.begin(), batch.reference_logps.end());
  else
    pending_refs_.resize(pending_refs_.size() + sequences, 0.0f);
  results_copied_ = false;

  BatchFlopCounts counts = batch_flop_counts(batch);
  counts.response_rows = M;  // the lm_head's rows: the chosen prompts' too when the objective reads them
  const double passes = backward ? 3.0 : 1.0;  // a backward costs twice the forward
  if (step_open_) {
    open_step_.flops += passes * batch_forward_flops_needed(model.config(), counts);
    open_step_.flops_all_tokens += passes * batch_forward_flops_all_tokens(model.config(), counts);
  }
  if (backward) {
    token_dlogp(model.dlogp(), dseq_, model.response_sequence(), M, stream_);
    if (prompt) token_dlogp_prompt(model.dlogp(), dprompt_, model.prompt_sequence(), M, stream_);
    ranks_->begin_backward(scale.last);
    model.backward();
    ranks_->end_backward();
  }
  sample_memory();
}

void CudaEngine::free_slots(PairSlots& slots, bool pinned) {
  for (void* p : {(void*)slots.seq_logp, (void*)slots.seq_entropy, (void*)slots.seq_tokens,
                  (void*)slots.seq_prompt_logp, (void*)slots.seq_prompt_tokens, (void*)slots.losses})
    if (p) cudaCheck(pinned ? cudaFreeHost(p) : cudaFree(p));
  slots = PairSlots{};
}

void CudaEngine::copy_slots(const PairSlots& to, const PairSlots& from, int pairs, cudaMemcpyKind kind) {
  if (pairs == 0) return;
  const size_t sequence_bytes = 2 * (size_t)pairs * sizeof(float);
  cudaCheck(cudaMemcpyAsync(to.seq_logp, from.seq_logp, sequence_bytes, kind, stream_));
  cudaCheck(cudaMemcpyAsync(to.seq_entropy, from.seq_entropy, sequence_bytes, kind, stream_));
  cudaCheck(cudaMemcpyAsync(to.seq_tokens, from.seq_tokens, sequence_bytes, kind, stream_));
  if (pending_prompt_) {
    cudaCheck(cudaMemcpyAsync(to.seq_prompt_logp, from.seq_prompt_logp, sequence_bytes, kind, stream_));
    cudaCheck(cudaMemcpyAsync(to.seq_prompt_tokens, from.seq_prompt_tokens, sequence_bytes, kind, stream_));
  }
  cudaCheck(cudaMemcpyAsync(to.losses, from.losses, (size_t)pairs * sizeof(PairLoss<float>), kind, stream_));
}

// The pending pairs' results and the scalars to the pinned host copies, then results_ready_.
void CudaEngine::enqueue_results_copy() {
  copy_slots(host_slots_, slots_, pending_pairs_, cudaMemcpyDeviceToHost);
  cudaCheck(cudaMemcpyAsync(host_scalars_, scalars_, sizeof(StepScalars), cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaEventRecord(results_ready_, stream_));
  results_copied_ = true;
}

StepResults CudaEngine::take_results() {
  StepResults out;
  if (pending_pairs_ > 0 || have_update_) {
    if (!results_copied_) enqueue_results_copy();
    ranks_->wait(results_ready_);  // the host's one wait per step
    append_pair_results(out.pairs, pending_pairs_, pending_ids_.data(), pending_refs_.data(), host_slots_.seq_logp,
                        host_slots_.seq_entropy, host_slots_.seq_tokens, host_slots_.losses,
                        pending_prompt_ ? host_slots_.seq_prompt_logp : nullptr,
                        pending_prompt_ ? host_slots_.seq_prompt_tokens : nullptr);
    if (have_update_) {
      out.grad_norm = host_scalars_->grad_norm;
      out.updated = host_scalars_->apply != 0;
    }
  }
  pending_pairs_ = 0;
  pending_prompt_ = false;
  pending_ids_.clear();
  pending_refs_.clear();
  results_copied_ = false;
  have_update_ = false;
  return out;
}

// ---- optimizer ----

void CudaEngine::set_phase_timer(PhaseTimer* timer) {
  // A captured piece would record the timer's events once and replay them: no per-step times.
  STAPO_CHECK(!timer || !options_.paths.cuda_graph, "--phases and --cuda-graph: the phase timer's events cannot be "
              "recorded inside replayed CUDA graphs; time phases without --cuda-graph");
  timer_ = timer;
  model_->set_phase_timer(timer);
}

void CudaEngine::zero_grad() {
  poll_steps(false);
  if (timer_) timer_->mark(Phase::other);
  model_->zero_grad();
  cudaCheck(cudaMemsetAsync(&scalars_->nonfinite_loss, 0, sizeof(int), stream_));
  if (!step_open_) open_step_.start = take_event();
  open_step_.flops = open_step_.flops_all_tokens = 0;
  cudaCheck(cudaEventRecord(open_step_.start, stream_));
  step_open_ = true;
}

void CudaEngine::optimizer_step(const OptimizerUpdate& update) {
  const int64_t t = update.t;
  STAPO_CHECK(t >= 1 && t <= INT32_MAX, "CudaEngine::optimizer_step: step ", t, " out of range");
  CudaModel& model = *model_;
  const GradLayout& grads = model.grad_layout();
  if (timer_) timer_->mark(Phase::grad_clip);
  model.settle_grads();  // a step without a backward still updates with zero gradients
  ranks_->reduce_gradients(model.grads());
  // AdamW's arguments for each tensor's part in this rank's range, by kind of moments (8-bit moments keep the
  // embedding's fp32: keeps_fp32_moments). The step's constants (lr, bias corrections, seeds) change every step:
  // with paths.adamw_multi_tensor they travel in a table per kind, uploaded here, so that the launches below read
  // device memory only (--cuda-graph captures them).
  const std::vector<ParamSpec>& specs = model.specs();
  std::vector<AdamWTensor> parts[2];
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& p = specs[i];
    const AdamWState part = tensor_state(i);
    if (part.n == 0) continue;
    AdamWTensor x;
    x.state = part;
    const size_t g = grads.offsets[i] + part.index_base;
    if (grads.bf16[i])
      x.grads_bf16 = model.grads_bf16() + g;
    else
      x.grads = model.grads() + g;
    x.step = adamw_step_make<float>(update.lr, p.is_norm() ? 0.0 : update.adamw.weight_decay, update.adamw.beta1,
                                    update.adamw.beta2, update.adamw.eps, t);
    // Stochastic rounding (--master none) needs fresh bits per tensor and step, keyed by the index in the tensor
    // (part.index_base: the same bits at any world size).
    x.seed = (uint32_t)mix64(options_.seed ^ mix64((uint64_t)t * 1000003u + i));
    parts[int(tensor_moments(i))].push_back(x);
  }
  constexpr MomentKind kinds[2] = {MomentKind::fp32, MomentKind::q8};
  AdamWTableUpload tables[2];
  if (options_.paths.adamw_multi_tensor)
    for (MomentKind moments : kinds)
      tables[int(moments)] = adamw_compact_upload_many(adamw_tables_[int(moments)], parts[int(moments)],
                                                       options_.master, moments, stream_);
  // The norm, the clip factor and the decision: the same launches for the same max_grad_norm.
  uint32_t max_norm_bits;
  const float max_norm = (float)update.max_grad_norm;
  std::memcpy(&max_norm_bits, &max_norm, sizeof(max_norm_bits));
  run_graphed(norm_graphs_.get(), GraphKey{{max_norm_bits}}, [&] {
    if (model.grads_bf16()) {  // --grads bf16, one rank (data_parallel_unsupported): the norm over both buffers
      grad_norm_accumulate(norm_partials_, model.grads(), grads.fp32_elements, false, stream_);
      grad_norm_accumulate(norm_partials_, model.grads_bf16(), grads.bf16_elements, true, stream_);
    } else {
      ranks_->norm_partials(norm_partials_, model.grads(), &scalars_->nonfinite_loss);
    }
    grad_norm_finish(&scalars_->grad_norm, &scalars_->clip_scale, &scalars_->apply, norm_partials_, max_norm,
                     &scalars_->nonfinite_loss, stream_);
  });
  have_update_ = true;
  enqueue_results_copy();  // before AdamW: take_results need not wait for the update
  if (timer_) timer_->mark(Phase::optimizer);
  // AdamW: the same launches for the same tables (under --cuda-graph always the tables: cuda_graph_paths).
  GraphKey adamw_key;
  for (const AdamWTableUpload& u : tables)
    adamw_key.values.insert(adamw_key.values.end(), {(int64_t)(uintptr_t)u.device, u.tensors, (int64_t)u.blocks});
  run_graphed(adamw_graphs_.get(), adamw_key, [&] {
    for (MomentKind moments : kinds) {
      if (options_.paths.adamw_multi_tensor) {
        adamw_compact_launch_many(tables[int(moments)], &scalars_->clip_scale, &scalars_->apply, stream_);
        continue;
      }
      for (const AdamWTensor& x : parts[int(moments)]) {
        if (x.grads_bf16)
          adamw_compact_update(x.state, options_.master, moments, x.grads_bf16, x.step, &scalars_->clip_scale,
                               &scalars_->apply, x.seed, stream_);
        else
          adamw_compact_update(x.state, options_.master, moments, x.grads, x.step, &scalars_->clip_scale,
                               &scalars_->apply, x.seed, stream_);
      }
    }
  });
  ranks_->gather_params(model.params());
  if (step_open_) {
    open_step_.end = take_event();
    cudaCheck(cudaEventRecord(open_step_.end, stream_));
    timed_steps_.push_back(open_step_);
    open_step_ = TimedStep{};
    step_open_ = false;
  }
  sample_memory();
  if (options_.report_every_s <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_report_).count() < options_.report_every_s) return;
  poll_steps(false);
  last_report_ = now;
  if (report_stats_.steps > 0 && report_stats_.seconds > 0) {
    report_stats_.peak_bytes = peak_used_;
    // On a terminal the trainer's progress bar is being redrawn in place: clear its line first.
    fprintf(stderr, "%sdevice: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "",
            step_stats_summary(report_stats_, options_.peak_tflops).c_str());
  }
  report_stats_ = CudaStepStats{};
}

// ---- statistics ----

cudaEvent_t CudaEngine::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t e;
    cudaCheck(cudaEventCreate(&e));
    return e;
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

void CudaEngine::poll_steps(bool wait) {
  while (!timed_steps_.empty()) {
    const TimedStep s = timed_steps_.front();
    if (wait) {
      cudaCheck(cudaEventSynchronize(s.end));
    } else {
      const cudaError_t status = cudaEventQuery(s.end);
      if (status == cudaErrorNotReady) {
        (void)cudaGetLastError();  // a status, not an error: leave nothing for the next launch check
        return;
      }
      cudaCheck(status);
    }
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, s.start, s.end));
    for (CudaStepStats* stats : {&stats_, &report_stats_, &last_stats_}) {
      stats->steps++;
      stats->seconds += ms / 1e3;
      stats->model_flops += s.flops;
      stats->model_flops_all_tokens += s.flops_all_tokens;
    }
    free_events_.insert(free_events_.end(), {s.start, s.end});
    timed_steps_.pop_front();
  }
}

CudaStepStats CudaEngine::take_step_stats() {
  poll_steps(true);
  CudaStepStats out = stats_;
  out.peak_bytes = peak_used_;
  stats_ = CudaStepStats{};
  return out;
}

Engine::StepReport CudaEngine::step_report() {
  poll_steps(false);
  const CudaStepStats s = last_stats_;
  last_stats_ = CudaStepStats{};
  StepReport report;
  if (s.steps == 0 || s.seconds <= 0) return report;  // none finished yet (reading never waits)
  const double tflops = model_tflops(s);
  const double gib = peak_used_ / double(1 << 30);
  report.metrics["step_time_s"] = s.seconds / double(s.steps);
  report.metrics["tflops"] = tflops;
  char text[96] = "";
  if (options_.peak_tflops > 0) {
    report.metrics["mfu"] = tflops / options_.peak_tflops;
    report.metrics["mfu_all_tokens"] = s.model_flops_all_tokens / s.seconds / 1e12 / options_.peak_tflops;
    snprintf(text, sizeof(text), "MFU %.1f%% ", 100.0 * tflops / options_.peak_tflops);
  }
  report.metrics["peak_memory_gib"] = gib;
  report.progress = text;
  snprintf(text, sizeof(text), "mem %.2f GiB", gib);
  report.progress += text;
  return report;
}

void CudaEngine::sample_memory() { peak_used_ = std::max(peak_used_, device_bytes_in_use()); }

double CudaEngine::device_bytes_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  return double(total_bytes - free_bytes) - double(baseline_used_);
}

double model_tflops(const CudaStepStats& s) { return s.model_flops / s.seconds / 1e12; }

std::string step_stats_summary(const CudaStepStats& s, double peak_tflops) {
  const double tflops = model_tflops(s);
  char line[256];
  snprintf(line, sizeof(line), "%lld steps at %.1f ms, %.1f model TFLOP/s", (long long)s.steps,
           1e3 * s.seconds / s.steps, tflops);
  std::string out = line;
  if (peak_tflops > 0) {
    snprintf(line, sizeof(line), ", MFU %.1f%% of %.0f (all-token lm_head count: %.1f%%)",
             100.0 * tflops / peak_tflops, peak_tflops, 100.0 * s.model_flops_all_tokens / s.seconds / 1e12 / peak_tflops);
    out += line;
  }
  snprintf(line, sizeof(line), ", peak device memory %.2f GiB", s.peak_bytes / double(1 << 30));
  return out + line;
}

// ---- host copies, checkpoints ----

std::vector<float> CudaEngine::parameter_to_host(size_t index, bool grad) {
  const std::vector<ParamSpec>& specs = model_->specs();
  STAPO_CHECK(index < specs.size(), "CudaEngine: parameter index ", index, " of ", specs.size());
  const GradLayout& grads = model_->grad_layout();
  const size_t at = grad ? grads.offsets[index] : model_->offsets()[index], n = specs[index].numel;
  if (grad) model_->settle_grads();
  std::vector<float> out(n);
  const float* fp32 =
      grad ? (grads.bf16[index] ? nullptr : model_->grads()) : ranks_->holds_whole() ? master_ : nullptr;
  if (fp32) {
    cudaCheck(cudaMemcpyAsync(out.data(), fp32 + at, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    cudaCheck(cudaStreamSynchronize(stream_));
    return out;
  }
  // bf16 values: a bf16 gradient, or the weights (with the split master's low halves when there are).
  const bool split = !grad && low_;
  const void* bf16_source = grad ? (const void*)(model_->grads_bf16() + at) : (const void*)(model_->params() + at);
  std::vector<uint16_t> high(n);
  std::vector<int16_t> low(split ? n : 0);
  cudaCheck(cudaMemcpyAsync(high.data(), bf16_source, n * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream_));
  if (split) cudaCheck(cudaMemcpyAsync(low.data(), low_ + at, n * sizeof(int16_t), cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < n; ++i) out[i] = split ? split_join(high[i], low[i]) : bf16_bits_to_float(high[i]);
  return out;
}

std::unique_ptr<CpuModel<float>> CudaEngine::weights_to_cpu() {
  auto model = std::make_unique<CpuModel<float>>(model_->config());
  std::vector<Parameter<float>>& params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::vector<float> host = parameter_to_host(i, false);
    std::copy(host.begin(), host.end(), params[i].data);
  }
  return model;
}

void CudaEngine::save_model(const std::string& dir) {
  // The master weights in F32 (under ZeRO-1 gathered from every rank's range); bf16-only weights in BF16 (every
  // rank has them all): both exact, so a resume continues bit for bit, at any world size.
  const std::vector<float> master = master_ ? ranks_->gather_to_host(master_) : std::vector<float>{};
  if (!ranks_->writer()) return;
  make_directories(dir);
  const std::vector<ParamSpec>& specs = model_->specs();
  std::vector<std::vector<float>> rounded(master_ ? 0 : specs.size());
  std::vector<TensorToWrite<float>> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!master_) rounded[i] = parameter_to_host(i, false);
    out.push_back({specs[i].name, specs[i].shape, master_ ? master.data() + model_->offsets()[i] : rounded[i].data()});
  }
  // The master weights (fp32 or split) in F32; bf16-only weights in BF16: both exact, so a resume continues bit
  // for bit.
  const bool fp32 = options_.master != MasterKind::none;
  safetensors_write(dir, out, fp32 ? DType::F32 : DType::BF16);
  write_file_atomic(dir + "/config.json", config_to_json(model_->config(), fp32 ? "float32" : "bfloat16"));
}

// The moments without the alignment padding, in parameter order (train/optimizer_state.h): fp32 m and v, or the
// 8-bit moments' packed layout (q8_moment_layout with align 1).
void CudaEngine::save_optimizer(const std::string& path) {
  if (options_.moments == MomentKind::fp32) {  // under ZeRO-1 gathered from every rank's range
    std::vector<float> m = ranks_->gather_to_host(m_), v = ranks_->gather_to_host(v_);
    if (!ranks_->writer()) return;
    param_drop_padding(model_->specs(), model_->offsets(), m);
    param_drop_padding(model_->specs(), model_->offsets(), v);
    optimizer_state_write(path, m.data(), v.data(), m.size());
    return;
  }
  // 8-bit moments: one rank (data_parallel_unsupported) holds them all, each tensor's at its place in q8_layout_;
  // the file's layout is the packed one.
  Q8MomentState host;
  q8_copy(host, cudaMemcpyDeviceToHost);
  optimizer_state_write_q8(path, model_->specs(), host);
}

// A file of the other kind of moments is refused, naming the --moments value to resume with.
void CudaEngine::load_optimizer(const std::string& path) {
  const std::vector<ParamSpec>& specs = model_->specs();
  if (options_.moments == MomentKind::fp32) {  // this rank's range of the buffer is one run of the file's elements
    const ShardRange mine = ranks_->updates();
    const PackedRange run = param_packed_range(specs, model_->offsets(), mine.begin, mine.end());
    const size_t count = param_packed_range(specs, model_->offsets(), 0, model_->buffer_elements()).last;
    std::vector<float> m(run.last - run.first), v(run.last - run.first);
    optimizer_state_read(path, m.data(), v.data(), count, run.first, run.last - run.first);
    size_t at = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      const ShardRange part = range_overlap(mine, model_->offsets()[i], specs[i].numel);
      if (part.count == 0) continue;
      const size_t to = part.begin - mine.begin, bytes = part.count * sizeof(float);
      cudaCheck(cudaMemcpyAsync(m_ + to, m.data() + at, bytes, cudaMemcpyHostToDevice, stream_));
      cudaCheck(cudaMemcpyAsync(v_ + to, v.data() + at, bytes, cudaMemcpyHostToDevice, stream_));
      at += part.count;
    }
    cudaCheck(cudaStreamSynchronize(stream_));  // m and v are freed on return
    return;
  }
  Q8MomentState host;
  optimizer_state_read_q8(path, specs, host);
  q8_copy(host, cudaMemcpyHostToDevice);
}

// Between the device's 8-bit moments (q8_layout_) and a host copy in the file's packed layout, each tensor's in
// turn, in the direction `kind` says (to the host: `host` resized first); waits for the copies, so the host copy
// may go once it returns.
void CudaEngine::q8_copy(Q8MomentState& host, cudaMemcpyKind kind) {
  const bool to_host = kind == cudaMemcpyDeviceToHost;
  const Q8MomentLayout packed = q8_moment_layout(model_->specs(), 1);
  if (to_host) host = q8_moment_state(packed);
  auto copy = [&](void* device, void* on_host, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(to_host ? on_host : device, to_host ? device : on_host, bytes, kind, stream_));
  };
  const std::vector<ParamSpec>& specs = model_->specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t from = q8_layout_.offset[i], to = packed.offset[i], n = specs[i].numel;
    if (q8_layout_.kind[i] == MomentKind::fp32) {
      copy(m_ + from, host.m.data() + to, n * sizeof(float));
      copy(v_ + from, host.v.data() + to, n * sizeof(float));
    } else {
      copy(m_code_ + from, host.m_code.data() + to, n);
      copy(v_code_ + from, host.v_code.data() + to, n);
    }
  }
  // The blocks do not depend on the alignment: the same order in both.
  copy(m_absmax_, host.m_absmax.data(), q8_layout_.blocks * sizeof(float));
  copy(v_absmax_, host.v_absmax.data(), q8_layout_.blocks * sizeof(float));
  cudaCheck(cudaStreamSynchronize(stream_));
}

std::string CudaEngine::graph_summary() const {
  if (!norm_graphs_) return "";
  return model_->graph_summary() + "; " + norm_graphs_->summary() + "; " + adamw_graphs_->summary();
}

std::string CudaEngine::description() const {
  size_t count = 0;
  for (const ParamSpec& s : model_->specs()) count += s.numel;
  const MasterKind master = options_.master;
  return cat("cuda bf16, ", options_.grads == GradKind::bf16 ? "bf16 gradients (fp32 for embeddings, lm_head, norms), "
                                                              : "fp32 gradients, ",
             master == MasterKind::fp32    ? "fp32 master weights"
             : master == MasterKind::split ? "split master weights (bf16 + low 16 bits)"
                                           : "bf16 weights with stochastic rounding",
             options_.moments == MomentKind::q8 ? ", 8-bit AdamW moments (fp32 for the embedding)" : "",
             options_.paths.description(), ", recompute ",
             options_.recompute,
             options_.attention == AttentionPath::cudnn    ? ", cuDNN attention"
             : options_.attention == AttentionPath::flash2 ? ", tensor-core attention (flash2)"
             : options_.attention == AttentionPath::flash2_atomic
                 ? ", tensor-core attention with the atomic backward (flash2-atomic)"
             : options_.attention == AttentionPath::flash2_narrow
                 ? ", tensor-core attention on 32-row tiles (flash2-narrow)"
                 : ", SIMT attention (flash)",
             ", ", count, " parameters, ", cuda_device_description(), ranks_->description());
}

}  // namespace stapo
