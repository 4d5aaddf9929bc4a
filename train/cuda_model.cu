// The CUDA model (train/cuda_model.h). The math is model/model.cpp's, op for op, on the kernels of kernels/.
// Per layer:  n1 = rmsnorm(x);  q,k,v = n1·Wᵀ;  rope(q, k);  x2 = x + attention(q,k,v)·Woᵀ;
//             n2 = rmsnorm(x2);  x' = x2 + (silu(n2·Wgᵀ) · n2·Wuᵀ)·Wdᵀ
// then  h = rmsnorm(x_L)  and the fused lm_head gives log-prob and entropy per response position.
#include "train/cuda_model.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "kernels/attention.h"
#include "kernels/cuda_common.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rows.h"
#include "kernels/swiglu.h"
#include "model/ops/rope.h"
#include "train/memory_plan.h"

namespace stapo {

using bf16 = __nv_bfloat16;


std::string StepPaths::description() const {
  std::string out;
  if (grad_first_write) out += ", gradients first written without a memset";
  if (rmsnorm_warp) out += ", RMSNorm backward one warp per row";
  if (device_embedding_index) out += ", embedding-gradient index built on the device";
  if (adamw_multi_tensor) out += ", AdamW in one launch";
  if (matmul_autotune) out += ", cuBLASLt algorithms timed per shape";
  if (fused_projections) out += ", q‖k‖v and gate‖up projections fused";
  if (cuda_graph) out += ", CUDA graphs of forward, backward and optimizer";
  return out;
}

// ---- construction ----

CudaModel::CudaModel(const ModelConfig& config, const CudaModelOptions& options, cudaStream_t stream)
    : config_(config), options_(options), stream_(stream) {
  const ModelConfig& c = config_;
  config_validate(c, "model config");
  STAPO_CHECK(options.recompute >= 0 && options.recompute <= 2, "--recompute ", options.recompute,
              " is not 0, 1 or 2");
  STAPO_CHECK(c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0 && c.vocab_size % 8 == 0,
              "the CUDA engine needs hidden_size (", c.hidden_size, "), intermediate_size (", c.intermediate_size,
              ") and vocab_size (", c.vocab_size, ") to be multiples of 8; use ./train_stapo_cpu for this model");
  STAPO_CHECK(c.head_dim == 64 || c.head_dim == 128, "the CUDA attention supports head_dim 64 or 128, this model has ",
              c.head_dim, "; use ./train_stapo_cpu for it");
#ifdef STAPO_HAVE_CUDNN
  if (options.attention == AttentionPath::cudnn) cudnn_attention_ = std::make_unique<CudnnAttention>();
#else
  STAPO_CHECK(options.attention != AttentionPath::cudnn, "--attention cudnn: this build has no cuDNN attention path "
              "(CMake found no cuDNN or no cudnn-frontend headers: run dev/deps.sh --cudnn-frontend and rebuild), "
              "or use --attention flash2 (the default)");
#endif
  specs_ = model_param_specs(c);
  // train/memory_plan.h: the plan's padding, and the buffer padded for data parallel's equal shards.
  offsets_ = param_offsets(specs_, kParamAlign, &total_);
  total_ = param_buffer_elements(specs_, options.shards);
  params_ = device_alloc_zeroed<bf16>(total_, stream_);
  grad_layout_ = stapo::grad_layout(specs_, options.grads, options.shards);
  grads_ = device_alloc_zeroed<float>(grad_layout_.fp32_elements, stream_);
  w_ = param_pointers(c, specs_, offsets_, params_);
  g_ = param_pointers(c, specs_, grad_layout_.offsets, grads_);
  if (grad_layout_.bf16_elements > 0) {
    grads_bf16_ = device_alloc_zeroed<bf16>(grad_layout_.bf16_elements, stream_);
    g_bf16_ = param_pointers(c, specs_, grad_layout_.offsets, grads_bf16_);
  }

  const std::vector<float> inv_freq = rope_inv_freq<float>(c.head_dim, c.rope_theta, c.rope_scaling);
  inv_freq_ = device_alloc_zeroed<float>(inv_freq.size(), stream_);
  cudaCheck(cudaMemcpyAsync(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  matmul_ = matmul_context_create();
  if (options.paths.matmul_autotune) matmul_.autotune = kMatmulAutotuneCandidates;
  lm_head_ws_ = lm_head_workspace_create(c.hidden_size, options.lm_head_chunk_rows, options.lm_head_chunk_vocab);
  rmsnorm_scratch_ = device_alloc_zeroed<float>(rmsnorm_backward_scratch_floats(c.hidden_size), stream_);
  if (options.paths.fused_projections) {
    const std::string refused = fused_projections_unsupported(c, options.grads);
    STAPO_CHECK(refused.empty(), "--fused-projections: ", refused);
  }
  if (options.paths.cuda_graph) {
    // The host-built index's group count sets the embedding backward's grid: a host value per batch.
    STAPO_CHECK(options.paths.device_embedding_index, "CudaModel: paths.cuda_graph needs "
                "paths.device_embedding_index (the engine sets it with --cuda-graph)");
    forward_graphs_ = std::make_unique<CudaGraphs>("forward", stream_);
    backward_graphs_ = std::make_unique<CudaGraphs>("backward", stream_);
  }
  if (options.max_tokens > 0) ensure_tokens(options.max_tokens);
  cudaCheck(cudaStreamSynchronize(stream_));  // inv_freq's pageable source goes out of scope
}

std::string CudaModel::graph_summary() const {
  return forward_graphs_ ? forward_graphs_->summary() + "; " + backward_graphs_->summary() : "";
}

CudaModel::~CudaModel() {
  try {  // a destructor must not throw; the process is usually exiting when this fails
    cudaCheck(cudaStreamSynchronize(stream_));
    for (void* p : {(void*)params_, (void*)grads_, (void*)grads_bf16_, (void*)inv_freq_, (void*)rmsnorm_scratch_,
                    arena_})
      if (p) cudaCheck(cudaFree(p));
    if (embedding_index_.order) embedding_grad_index_free(embedding_index_);
    if (lm_head_ws_.logits) lm_head_workspace_free(lm_head_ws_);
    if (matmul_.handle) matmul_context_free(matmul_);
  } catch (const Error& e) {
    fprintf(stderr, "warning: releasing the CUDA model: %s\n", e.what());
  }
}

// Activation buffers for N tokens, laid out by train/memory_plan.h's activation_layout: the arena --dry-run
// prints is the one allocated here. Everything in it is recomputed by every forward, so growing it (which drops
// its contents) is only done at the start of a forward.
void CudaModel::ensure_tokens(int N) {
  if (N <= capacity_) return;
  const bool fused = options_.paths.fused_projections;
  const ActivationLayout layout = activation_layout(config_, (uint64_t)N, options_.recompute, fused,
                                                    options_.attention == AttentionPath::flash2_atomic);
  cudaCheck(cudaStreamSynchronize(stream_));  // nothing may still use the old arena
  if (arena_) cudaCheck(cudaFree(arena_));
  arena_ = nullptr;
  capacity_ = 0;
  for (CudaGraphs* graphs : {forward_graphs_.get(), backward_graphs_.get()})
    if (graphs) graphs->clear();  // they read the old arena and embedding index
  cudaError_t err = cudaMalloc(&arena_, layout.bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    arena_ = nullptr;
    fail("CudaModel: cannot allocate ", layout.bytes / double(1 << 30), " GiB of activations for ", N,
         " tokens (", cudaGetErrorString(err), "). Use a smaller --batch-size or --max-length, or --recompute 2");
  }
  acts_.assign(config_.num_hidden_layers, LayerActs{});
  for (const ActBuffer& b : layout.buffers) {
    char* at = static_cast<char*>(arena_) + b.offset;
    bf16* h = reinterpret_cast<bf16*>(at);
    float* f = reinterpret_cast<float*>(at);
    int32_t* i = reinterpret_cast<int32_t*>(at);
    if (act_slot_per_layer(b.slot)) {  // one layer's, or (layer −1) every layer's shared buffer
      for (int l = 0; l < config_.num_hidden_layers; ++l) {
        if (b.layer >= 0 && b.layer != l) continue;
        LayerActs& a = acts_[l];
        switch (b.slot) {
          case ActSlot::resid: a.resid = h; break;
          case ActSlot::norm1: a.norm1 = h; break;
          case ActSlot::q: a.q = h; break;
          case ActSlot::k: a.k = h; break;
          case ActSlot::v: a.v = h; break;
          case ActSlot::att: a.att = h; break;
          case ActSlot::resid2: a.resid2 = h; break;
          case ActSlot::norm2: a.norm2 = h; break;
          case ActSlot::gate: a.gate = h; break;
          case ActSlot::up: a.up = h; break;
          case ActSlot::act: a.act = h; break;
          case ActSlot::rstd1: a.rstd1 = f; break;
          case ActSlot::rstd2: a.rstd2 = f; break;
          case ActSlot::lse: a.lse = f; break;
          default: break;
        }
      }
      continue;
    }
    switch (b.slot) {
      case ActSlot::branch: branch_ = h; break;
      case ActSlot::final_resid: final_resid_ = h; break;
      case ActSlot::final_norm: final_norm_ = h; break;
      case ActSlot::final_rstd: final_rstd_ = f; break;
      case ActSlot::tokens: tokens_ = i; break;
      case ActSlot::positions: positions_ = i; break;
      case ActSlot::segments: segments_ = i; break;
      case ActSlot::response_index: response_index_ = i; break;  // M ≤ N
      case ActSlot::response_targets: response_targets_ = i; break;
      case ActSlot::response_sequence: response_sequence_ = i; break;
      case ActSlot::prompt_sequence: prompt_sequence_ = i; break;
      case ActSlot::response_h: response_h_ = h; break;
      case ActSlot::logp: logp_ = f; break;
      case ActSlot::entropy: entropy_ = f; break;
      case ActSlot::response_lse: response_lse_ = f; break;
      case ActSlot::dlogp: dlogp_ = f; break;
      case ActSlot::d_resid: d_resid_ = h; break;
      case ActSlot::d_norm: d_norm_ = h; break;
      case ActSlot::d_att: d_att_ = h; break;
      case ActSlot::d_q: d_q_ = h; break;
      case ActSlot::d_k: d_k_ = h; break;
      case ActSlot::d_v: d_v_ = h; break;
      case ActSlot::d_act: d_act_ = h; break;
      case ActSlot::d_gate: d_gate_ = h; break;
      case ActSlot::d_up: d_up_ = h; break;
      case ActSlot::attention_scratch: attention_scratch_ = f; break;
      default: break;
    }
  }
  if (fused) {  // the second halves of the fused slots (train/memory_plan.h)
    const int F = config_.intermediate_size;
    for (LayerActs& a : acts_) a.up = a.gate + F;
    d_up_ = d_gate_ + F;
    qkv_ = d_gate_;
  }
  capacity_ = N;
  if (embedding_index_.order) embedding_grad_index_free(embedding_index_);
  embedding_index_ = embedding_grad_index_create(N, options_.paths.device_embedding_index);
  have_forward_ = false;
}

void CudaModel::clear_grads() {
  cudaCheck(cudaMemsetAsync(grads_, 0, grad_layout_.fp32_elements * sizeof(float), stream_));
  if (grads_bf16_) cudaCheck(cudaMemsetAsync(grads_bf16_, 0, grad_layout_.bf16_elements * sizeof(bf16), stream_));
  grads_pending_zero_ = false;
}

// Lazily, the padding between tensors is left as it is: no kernel writes it, so it stays 0 from clear_grads.
void CudaModel::zero_grad() {
  if (options_.paths.grad_first_write)
    grads_pending_zero_ = true;
  else
    clear_grads();
}

void CudaModel::settle_grads() {
  if (grads_pending_zero_) clear_grads();
}

// (rows, width) bf16 from rows `from_stride` apart to rows `to_stride` apart: v and its gradient between q‖k‖v rows
// and the attention's buffer.
void CudaModel::copy_rows(bf16* to, size_t to_stride, const bf16* from, size_t from_stride, int rows, int width) {
  cudaCheck(cudaMemcpy2DAsync(to, to_stride * sizeof(bf16), from, from_stride * sizeof(bf16), width * sizeof(bf16),
                              rows, cudaMemcpyDeviceToDevice, stream_));
}

// ---- attention: ours (SIMT or tensor cores), or cuDNN's where the build has it and the options ask ----

void CudaModel::attention_forward_any(const LayerActs& a, const AttentionShape& shape) {
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_) return cudnn_attention_->forward(a.att, a.lse, a.q, a.k, a.v, shape, stream_);
#endif
  if (options_.attention == AttentionPath::flash2 || options_.attention == AttentionPath::flash2_atomic)
    attention_flash2_forward(a.att, a.lse, a.q, a.k, a.v, shape, segments_, stream_);
  else if (options_.attention == AttentionPath::flash2_narrow)
    attention_flash2_narrow_forward(a.att, a.lse, a.q, a.k, a.v, shape, segments_, stream_);
  else
    attention_forward(a.att, a.lse, a.q, a.k, a.v, shape, segments_, stream_);
}

void CudaModel::attention_backward_any(const LayerActs& a, const AttentionShape& shape) {
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_)
    return cudnn_attention_->backward(d_q_, d_k_, d_v_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape, stream_);
#endif
  if (options_.attention == AttentionPath::flash2)
    attention_flash2_backward(d_q_, d_k_, d_v_, attention_scratch_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape,
                              segments_, stream_);
  else if (options_.attention == AttentionPath::flash2_atomic)
    attention_flash2_backward_atomic(d_q_, d_k_, d_v_, attention_scratch_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape,
                                     segments_, stream_);
  else if (options_.attention == AttentionPath::flash2_narrow)
    attention_flash2_narrow_backward(d_q_, d_k_, d_v_, attention_scratch_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape,
                                     segments_, stream_);
  else
    attention_backward(d_q_, d_k_, d_v_, attention_scratch_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape, segments_,
                       stream_);
}

// ---- forward ----

void CudaModel::layer_forward(int l, bool recompute) {
  const ModelConfig& c = config_;
  const int N = rows_ * T_, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = (float)c.rms_norm_eps;
  const AttentionShape shape{rows_, T_, H, Hkv, D, c.sliding_window};
  const LayerParams<bf16>& w = w_.layers[l];
  const LayerActs& a = acts_[l];
  phase(Phase::norm_forward);
  if (l == 0 || recompute)
    rmsnorm_forward(a.norm1, a.rstd1, nullptr, a.resid, nullptr, w.input_norm, N, C, eps, stream_);
  else  // resid_l = resid2_{l-1} + mlp_{l-1}, then its norm
    rmsnorm_forward(a.norm1, a.rstd1, a.resid, acts_[l - 1].resid2, branch_, w.input_norm, N, C, eps, stream_);
  phase(Phase::matmul_forward);
  if (options_.paths.fused_projections) {  // q‖k‖v rows, then each part into its own buffer (k, v by GQA's Hkv)
    const int QKV = (H + 2 * Hkv) * D;
    matmul_bf16(matmul_, qkv_, a.norm1, w.wq, N, QKV, C, false, true, 0.0f, stream_);
    phase(Phase::elementwise_forward);
    rope_forward_rows(a.q, (size_t)H * D, qkv_, QKV, positions_, inv_freq_, N, H, D, stream_);
    rope_forward_rows(a.k, (size_t)Hkv * D, qkv_ + H * D, QKV, positions_, inv_freq_, N, Hkv, D, stream_);
    copy_rows(a.v, (size_t)Hkv * D, qkv_ + (H + Hkv) * D, QKV, N, Hkv * D);
  } else {
    matmul_bf16(matmul_, a.q, a.norm1, w.wq, N, H * D, C, false, true, 0.0f, stream_);
    matmul_bf16(matmul_, a.k, a.norm1, w.wk, N, Hkv * D, C, false, true, 0.0f, stream_);
    matmul_bf16(matmul_, a.v, a.norm1, w.wv, N, Hkv * D, C, false, true, 0.0f, stream_);
    phase(Phase::elementwise_forward);
    rope_forward(a.q, positions_, inv_freq_, N, H, D, stream_);
    rope_forward(a.k, positions_, inv_freq_, N, Hkv, D, stream_);
  }
  phase(Phase::attention_forward);
  attention_forward_any(a, shape);
  phase(Phase::matmul_forward);
  matmul_bf16(matmul_, branch_, a.att, w.wo, N, C, H * D, false, true, 0.0f, stream_);
  phase(Phase::norm_forward);
  rmsnorm_forward(a.norm2, a.rstd2, a.resid2, a.resid, branch_, w.post_norm, N, C, eps, stream_);
  phase(Phase::matmul_forward);
  if (options_.paths.fused_projections) {
    matmul_bf16(matmul_, a.gate, a.norm2, w.w_gate, N, 2 * F, C, false, true, 0.0f, stream_);  // gate‖up rows
  } else {
    matmul_bf16(matmul_, a.gate, a.norm2, w.w_gate, N, F, C, false, true, 0.0f, stream_);
    matmul_bf16(matmul_, a.up, a.norm2, w.w_up, N, F, C, false, true, 0.0f, stream_);
  }
  phase(Phase::elementwise_forward);
  swiglu_forward(a.act, a.gate, a.up, N, F, gate_up_stride(), stream_);
  phase(Phase::matmul_forward);
  // The MLP output only feeds the next residual add, which backward never needs again.
  if (!recompute) matmul_bf16(matmul_, branch_, a.act, w.w_down, N, C, F, false, true, 0.0f, stream_);
}

void CudaModel::layer_restore(int l) {
  phase(Phase::recompute);
  restoring_ = true;
  if (options_.recompute == 2) {
    layer_forward(l, true);
  } else if (options_.recompute == 1) {
    const int N = rows_ * T_, C = config_.hidden_size;
    const float eps = (float)config_.rms_norm_eps;
    const LayerParams<bf16>& w = w_.layers[l];
    const LayerActs& a = acts_[l];
    rmsnorm_forward(a.norm1, a.rstd1, nullptr, a.resid, nullptr, w.input_norm, N, C, eps, stream_);
    rmsnorm_forward(a.norm2, a.rstd2, nullptr, a.resid2, nullptr, w.post_norm, N, C, eps, stream_);
    swiglu_forward(a.act, a.gate, a.up, N, config_.intermediate_size, gate_up_stride(), stream_);
  }
  restoring_ = false;
}

void CudaModel::forward(const PairBatch& batch, bool chosen_prompts) {
  const ModelConfig& c = config_;
  pair_batch_validate(batch, c.vocab_size);
  const LogpRows rows = logp_rows(batch, chosen_prompts);  // before any state changes: it may refuse the batch
  const TokenBatch& t = batch.tokens;  // rows beyond the attention grid's limit: its launcher refuses them
  const int N = t.rows * t.T;
  phase(Phase::other);
  ensure_tokens(N);
  rows_ = t.rows;
  T_ = t.T;
  if (!options_.paths.device_embedding_index) host_tokens_ = t.tokens;  // the host build's input
  response_rows_ = (int)rows.index.size();
  have_prompt_rows_ = chosen_prompts;
  const size_t bytes = (size_t)N * sizeof(int32_t), response_bytes = (size_t)response_rows_ * sizeof(int32_t);
  std::vector<UploadPiece> uploads = {{tokens_, t.tokens.data(), bytes},
                                      {positions_, t.positions.data(), bytes},
                                      {segments_, t.segments.data(), bytes},
                                      {response_index_, rows.index.data(), response_bytes},
                                      {response_targets_, rows.targets.data(), response_bytes},
                                      {response_sequence_, rows.response_sequence.data(), response_bytes}};
  if (chosen_prompts) uploads.push_back({prompt_sequence_, rows.prompt_sequence.data(), response_bytes});
  staging_.upload(uploads, stream_);
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_) cudnn_attention_->set_rows(t.segments, t.rows, t.T, stream_);
#endif
  run_graphed(forward_graphs_.get(), GraphKey{{t.rows, t.T, response_rows_, chosen_prompts}},
              [&] { forward_enqueue(); });
  have_forward_ = true;
}

void CudaModel::forward_enqueue() {
  const ModelConfig& c = config_;
  const int N = rows_ * T_, C = c.hidden_size, L = c.num_hidden_layers, M = response_rows_;
  phase(Phase::embedding);
  embedding_forward(acts_[0].resid, tokens_, w_.globals.embed, N, C, stream_);
  for (int l = 0; l < L; ++l) layer_forward(l, false);
  phase(Phase::norm_forward);
  rmsnorm_forward(final_norm_, final_rstd_, final_resid_, acts_[L - 1].resid2, branch_, w_.globals.final_norm, N, C,
                  (float)c.rms_norm_eps, stream_);
  phase(Phase::lm_head_loss);
  rows_gather(response_h_, final_norm_, response_index_, M, C, stream_);
  lm_head_forward(matmul_, lm_head_ws_, logp_, entropy_, response_lse_, response_h_, w_.globals.lm_head,
                  response_targets_, M, C, c.vocab_size, stream_);
}

// ---- backward ----

void CudaModel::backward() {
  STAPO_CHECK(have_forward_, "CudaModel::backward called before forward");
  const bool first = grads_pending_zero_;  // a lazy zero_grad: this backward writes the gradients (below)
  grads_pending_zero_ = false;
  // grads_done's hook runs on the host during a capture, not at a replay: it must enqueue nothing then (data
  // parallel's overlap, which --cuda-graph refuses).
  run_graphed(backward_graphs_.get(), GraphKey{{rows_, T_, response_rows_, first}}, [&] { backward_enqueue(first); });
}

void CudaModel::backward_enqueue(bool first) {
  const ModelConfig& c = config_;
  const int N = rows_ * T_, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim, V = c.vocab_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, M = response_rows_;
  const AttentionShape shape{rows_, T_, H, Hkv, D, c.sliding_window};
  const GlobalParams<bf16>& w = w_.globals;
  const GlobalParams<float>& g = g_.globals;
  // After a lazy zero_grad every gradient is written (=) by its first writer below instead of added to (+=):
  // β = 0 for the weight GEMMs, dweight = for the RMSNorms, the lm_head's first token chunk. The embedding's
  // backward adds into the rows of this batch's tokens only, so its tensor is zeroed first, unless it is tied to
  // the lm_head, whose backward has written all of it by then (when there are response rows).
  const bool fused = options_.paths.fused_projections;
  const bool tied = g.lm_head == g.embed;
  const float beta = first ? 0.0f : 1.0f;
  const RmsnormBackwardKernel norm_kernel = options_.paths.rmsnorm_warp && rmsnorm_backward_warp_supported(C)
                                                ? RmsnormBackwardKernel::warp
                                                : RmsnormBackwardKernel::block;
  auto zero_tensor = [&](float* tensor) {
    cudaCheck(cudaMemsetAsync(tensor, 0, (size_t)V * C * sizeof(float), stream_));
  };
  phase(Phase::embedding);
  if (options_.paths.device_embedding_index)
    embedding_grad_index_build_device(embedding_index_, tokens_, N, V, stream_);
  else
    embedding_grad_index_build(embedding_index_, host_tokens_.data(), N, V, stream_);
  if (first && (!tied || M == 0)) zero_tensor(g.embed);
  if (first && !tied && M == 0) zero_tensor(g.lm_head);

  phase(Phase::lm_head_loss);
  // dh of the response rows into branch_ (free until the layers' backward), scattered into the zeroed (N, C).
  lm_head_backward(matmul_, lm_head_ws_, branch_, g.lm_head, dlogp_, response_lse_, response_h_, w.lm_head,
                   response_targets_, M, C, V, stream_, beta);
  cudaCheck(cudaMemsetAsync(d_norm_, 0, (size_t)N * C * sizeof(bf16), stream_));
  rows_scatter(d_norm_, branch_, response_index_, M, C, stream_);
  cudaCheck(cudaMemsetAsync(d_resid_, 0, (size_t)N * C * sizeof(bf16), stream_));
  phase(Phase::norm_backward);
  rmsnorm_backward(d_resid_, g.final_norm, rmsnorm_scratch_, d_norm_, final_resid_, w.final_norm, final_rstd_, N, C,
                   stream_, !first, norm_kernel);
  grads_done(c.num_hidden_layers + 1);  // final norm, lm_head (tied: the embedding's bucket, below)
  // d_resid_ holds the residual stream's gradient; each branch's backward adds to it (rmsnorm_backward +=).
  // Activation gradients are bf16 (=); weight gradients go to the fp32 buffer (β = 1: +=; β = 0 on the first write).
  for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
    layer_restore(l);
    const LayerParams<bf16>& wl = w_.layers[l];
    const LayerParams<float>& gl = g_.layers[l];  // the RMSNorm weights' (always fp32)
    const LayerActs& a = acts_[l];
    // dW (+)= dYᵀ·X of a matmul weight (= on the first write), (M, K) from dY (N, M) and X (N, K), into whichever
    // buffer holds it.
    auto weight_grad = [&](float* LayerParams<float>::*tensor, bf16* LayerParams<bf16>::*tensor_bf16, const bf16* dy,
                           const bf16* x, int M, int K) {
      if (grads_bf16_)
        matmul_bf16(matmul_, g_bf16_.layers[l].*tensor_bf16, dy, x, M, K, N, true, false, beta, stream_);
      else
        matmul_bf16_f32(matmul_, gl.*tensor, dy, x, M, K, N, true, false, beta, stream_);
    };
    // MLP branch: resid_{l+1} = resid2 + act·Wdᵀ.
    phase(Phase::matmul_backward);
    matmul_bf16(matmul_, d_act_, d_resid_, wl.w_down, N, F, C, false, false, 0.0f, stream_);
    weight_grad(&LayerParams<float>::w_down, &LayerParams<bf16>::w_down, d_resid_, a.act, C, F);
    phase(Phase::elementwise_backward);
    swiglu_backward(d_gate_, d_up_, d_act_, a.gate, a.up, N, F, gate_up_stride(), stream_);
    phase(Phase::matmul_backward);
    if (fused) {  // d_gate‖d_up rows against w_gate‖w_up
      matmul_bf16(matmul_, d_norm_, d_gate_, wl.w_gate, N, C, 2 * F, false, false, 0.0f, stream_);
      weight_grad(&LayerParams<float>::w_gate, &LayerParams<bf16>::w_gate, d_gate_, a.norm2, 2 * F, C);
    } else {
      matmul_bf16(matmul_, d_norm_, d_gate_, wl.w_gate, N, C, F, false, false, 0.0f, stream_);
      matmul_bf16(matmul_, d_norm_, d_up_, wl.w_up, N, C, F, false, false, 1.0f, stream_);
      weight_grad(&LayerParams<float>::w_gate, &LayerParams<bf16>::w_gate, d_gate_, a.norm2, F, C);
      weight_grad(&LayerParams<float>::w_up, &LayerParams<bf16>::w_up, d_up_, a.norm2, F, C);
    }
    phase(Phase::norm_backward);
    rmsnorm_backward(d_resid_, gl.post_norm, rmsnorm_scratch_, d_norm_, a.resid2, wl.post_norm, a.rstd2, N, C,
                     stream_, !first, norm_kernel);
    // Attention branch: resid2 = resid + att·Woᵀ.
    phase(Phase::matmul_backward);
    matmul_bf16(matmul_, d_att_, d_resid_, wl.wo, N, H * D, C, false, false, 0.0f, stream_);
    weight_grad(&LayerParams<float>::wo, &LayerParams<bf16>::wo, d_resid_, a.att, C, H * D);
    phase(Phase::attention_backward);
    attention_backward_any(a, shape);
    phase(Phase::elementwise_backward);
    if (fused) {  // the gradients of q, k, v into q‖k‖v rows (RoPE's backward on the way), then one GEMM each
      const int QKV = (H + 2 * Hkv) * D;
      rope_backward_rows(qkv_, QKV, d_q_, (size_t)H * D, positions_, inv_freq_, N, H, D, stream_);
      rope_backward_rows(qkv_ + H * D, QKV, d_k_, (size_t)Hkv * D, positions_, inv_freq_, N, Hkv, D, stream_);
      copy_rows(qkv_ + (H + Hkv) * D, QKV, d_v_, (size_t)Hkv * D, N, Hkv * D);
      phase(Phase::matmul_backward);
      matmul_bf16(matmul_, d_norm_, qkv_, wl.wq, N, C, QKV, false, false, 0.0f, stream_);
      weight_grad(&LayerParams<float>::wq, &LayerParams<bf16>::wq, qkv_, a.norm1, QKV, C);
    } else {
      rope_backward(d_q_, positions_, inv_freq_, N, H, D, stream_);
      rope_backward(d_k_, positions_, inv_freq_, N, Hkv, D, stream_);
      phase(Phase::matmul_backward);
      matmul_bf16(matmul_, d_norm_, d_q_, wl.wq, N, C, H * D, false, false, 0.0f, stream_);
      matmul_bf16(matmul_, d_norm_, d_k_, wl.wk, N, C, Hkv * D, false, false, 1.0f, stream_);
      matmul_bf16(matmul_, d_norm_, d_v_, wl.wv, N, C, Hkv * D, false, false, 1.0f, stream_);
      weight_grad(&LayerParams<float>::wq, &LayerParams<bf16>::wq, d_q_, a.norm1, H * D, C);
      weight_grad(&LayerParams<float>::wk, &LayerParams<bf16>::wk, d_k_, a.norm1, Hkv * D, C);
      weight_grad(&LayerParams<float>::wv, &LayerParams<bf16>::wv, d_v_, a.norm1, Hkv * D, C);
    }
    phase(Phase::norm_backward);
    rmsnorm_backward(d_resid_, gl.input_norm, rmsnorm_scratch_, d_norm_, a.resid, wl.input_norm, a.rstd1, N, C,
                     stream_, !first, norm_kernel);
    grads_done(1 + l);
  }
  phase(Phase::embedding);
  embedding_backward(g.embed, d_resid_, embedding_index_, C, stream_);
  grads_done(0);
}

}  // namespace stapo
