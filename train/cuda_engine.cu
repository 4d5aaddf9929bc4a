// The CUDA engine (train/cuda_engine.h). The math is model/model.cpp's, op for op, on the kernels of kernels/;
// the residual adds are fused into the RMSNorm that follows them (kernels/rmsnorm.h), so the residual stream
// entering layer l is formed by layer l's input_norm:  resid_l = resid2_{l-1} + mlp_{l-1}.
// Everything runs on one non-blocking stream; the host waits for it only to read the per-sequence sums (forward),
// the gradient norm, and parameters or moments it is asked for.
#include "train/cuda_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unistd.h>

#include "common/error.h"
#include "common/file_io.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/cuda_common.h"
#include "kernels/grad_norm.h"
#include "kernels/preference_loss.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/ops/rope.h"
#include "model/safetensors.h"
#include "train/grad_clip.h"
#include "train/model_flops.h"
#include "train/optimizer_state.h"

namespace stapo {

using bf16 = __nv_bfloat16;

namespace {

constexpr size_t kAlignElements = 128;  // 256 bytes of bf16: every tensor suits 128-bit loads and cuBLASLt
constexpr size_t kAlignBytes = 256;

size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

__host__ __device__ inline uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// out[i] = stddev · N(0, 1) from a hash of (seed, i) (Box-Muller), or `value` when stddev is 0. fp32 staging for
// the weights of a benchmark model; one thread per element, grid-stride.
__global__ void init_weights_kernel(float* out, size_t n, float stddev, float value, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    if (stddev == 0.0f) {
      out[i] = value;
      continue;
    }
    const uint64_t h = mix64(seed ^ mix64(i));
    const float u1 = ((uint32_t)(h >> 32) + 1.0f) * 2.3283064e-10f;  // (0, 1]
    const float u2 = (uint32_t)h * 2.3283064e-10f;                    // [0, 1)
    out[i] = stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

// Row gather (scatter = false):  out[m] = in[index[m]];  scatter (true):  out[index[m]] = in[m];  rows of C bf16,
// m < M. One thread per 8 channels (C % 8 == 0, 16-byte-aligned rows).
__global__ void rows_copy_kernel(bf16* out, const bf16* in, const int32_t* index, int M, int C, bool scatter) {
  const int vecs = C / 8;
  const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)M * vecs) return;
  const int m = (int)(i / vecs), c = (int)(i % vecs) * 8;
  const size_t dst = (size_t)(scatter ? index[m] : m) * C + c, src = (size_t)(scatter ? m : index[m]) * C + c;
  *reinterpret_cast<int4*>(out + dst) = *reinterpret_cast<const int4*>(in + src);
}

void rows_copy(bf16* out, const bf16* in, const int32_t* index, int M, int C, bool scatter, cudaStream_t stream) {
  if (M == 0) return;
  const size_t threads = (size_t)M * (C / 8);
  rows_copy_kernel<<<(unsigned)((threads + 255) / 256), 256, 0, stream>>>(out, in, index, M, C, scatter);
  cudaCheck(cudaGetLastError());
}

// Carves one allocation into 256-byte-aligned pieces; with a null base it only measures.
struct Carver {
  char* base = nullptr;
  size_t offset = 0;
  template <typename T>
  T* take(size_t count) {
    offset = round_up(offset, kAlignBytes);
    T* p = base ? reinterpret_cast<T*>(base + offset) : nullptr;
    offset += count * sizeof(T);
    return p;
  }
};

template <typename T>
T* device_zeros(size_t count, cudaStream_t stream) {
  T* p = nullptr;
  cudaCheck(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
  cudaCheck(cudaMemsetAsync(p, 0, std::max<size_t>(count, 1) * sizeof(T), stream));
  return p;
}

}  // namespace

// ---- construction ----

CudaEngine::CudaEngine(const CpuModel<float>& model, const CudaEngineOptions& options)
    : config_(model.config()), options_(options) {
  const ModelConfig& c = config_;
  STAPO_CHECK(options.recompute >= 0 && options.recompute <= 2, "--recompute ", options.recompute,
              " is not 0, 1 or 2");
  STAPO_CHECK(c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0 && c.vocab_size % 8 == 0,
              "the CUDA engine needs hidden_size (", c.hidden_size, "), intermediate_size (", c.intermediate_size,
              ") and vocab_size (", c.vocab_size, ") to be multiples of 8; use ./train_stapo_cpu for this model");
  STAPO_CHECK(c.head_dim == 64 || c.head_dim == 128, "the CUDA attention supports head_dim 64 or 128, this model has ",
              c.head_dim, "; use ./train_stapo_cpu for it");
#ifndef STAPO_HAVE_CUDNN
  STAPO_CHECK(options.attention != AttentionPath::cudnn, "--attention cudnn: this build has no cuDNN attention path "
              "(CMake found no cuDNN or no cudnn-frontend headers: run dev/deps.sh --cudnn-frontend and rebuild), "
              "or use --attention flash");
#endif
  std::string why;
  STAPO_CHECK(cuda_device_available(&why), "no CUDA device: ", why, ". Use ./train_stapo_cpu on the CPU.");
  if (options_.peak_tflops <= 0) options_.peak_tflops = peak_bf16_tflops(cuda_device_description());
  cudaCheck(cudaFree(nullptr));  // creates the context, so the baseline below includes it
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  baseline_used_ = total_bytes - free_bytes;
  cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
#ifdef STAPO_HAVE_CUDNN
  // After the baseline, so that the handle's device memory counts as the engine's.
  if (options.attention == AttentionPath::cudnn) cudnn_attention_ = std::make_unique<CudnnAttention>();
#endif

  for (const Parameter<float>& p : model.parameters()) {
    Tensor t{p.name, p.shape, round_up(total_, kAlignElements), p.numel, p.is_norm};
    total_ = t.offset + t.numel;
    tensors_.push_back(t);
  }
  total_ = round_up(total_, kAlignElements);
  params_ = device_zeros<bf16>(total_, stream_);
  grads_ = device_zeros<bf16>(total_, stream_);
  if (!options.bf16_params) master_ = device_zeros<float>(total_, stream_);
  m_ = device_zeros<float>(total_, stream_);
  v_ = device_zeros<float>(total_, stream_);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    w_layers_.push_back(layer_pointers(params_, l));
    g_layers_.push_back(layer_pointers(grads_, l));
  }
  w_ = global_pointers(params_);
  g_ = global_pointers(grads_);

  // Weights go through an fp32 staging buffer (the master copy, or the first moment, zeroed after) and are
  // rounded to bf16 on the device.
  float* staging = master_ ? master_ : m_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    if (options.random_init) {
      const int blocks = (int)std::min<size_t>((t.numel + 255) / 256, 65536);
      init_weights_kernel<<<blocks, 256, 0, stream_>>>(staging + t.offset, t.numel, t.is_norm ? 0.0f : options.init_stddev,
                                                       1.0f, mix64(options.seed ^ mix64(i)));
      cudaCheck(cudaGetLastError());
    } else {
      cudaCheck(cudaMemcpyAsync(staging + t.offset, model.parameters()[i].data, t.numel * sizeof(float),
                                cudaMemcpyHostToDevice, stream_));
    }
  }
  convert_fp32_to_bf16(params_, staging, total_, stream_);
  if (!master_) cudaCheck(cudaMemsetAsync(m_, 0, total_ * sizeof(float), stream_));

  const std::vector<float> inv_freq = rope_inv_freq<float>(c.head_dim, c.rope_theta, c.rope_scaling);
  inv_freq_ = device_zeros<float>(inv_freq.size(), stream_);
  cudaCheck(cudaMemcpyAsync(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  matmul_ = matmul_context_create();
  lm_head_ws_ = lm_head_workspace_create(c.hidden_size, options.lm_head_chunk_rows, options.lm_head_chunk_vocab);
  rmsnorm_scratch_ = device_zeros<float>(rmsnorm_backward_scratch_floats(c.hidden_size), stream_);
  norm_partials_ = device_zeros<float>(GRAD_NORM_BLOCKS, stream_);
  scalars_ = device_zeros<float>(4, stream_);
  cudaCheck(cudaEventCreate(&step_start_));
  cudaCheck(cudaEventCreate(&step_end_));
  if (options.max_tokens > 0) ensure_tokens(options.max_tokens);
  cudaCheck(cudaStreamSynchronize(stream_));  // the host model may be freed once we return
  last_report_ = std::chrono::steady_clock::now();
  sample_memory();
}

CudaEngine::~CudaEngine() {
  try {  // a destructor must not throw; the process is usually exiting when this fails
    cudaCheck(cudaStreamSynchronize(stream_));
    for (void* p : {(void*)params_, (void*)grads_, (void*)master_, (void*)m_, (void*)v_, (void*)inv_freq_, arena_,
                    (void*)rmsnorm_scratch_, (void*)norm_partials_, (void*)scalars_, (void*)seq_logp_,
                    (void*)seq_entropy_, (void*)seq_tokens_, (void*)dseq_})
      if (p) cudaCheck(cudaFree(p));
    if (host_sums_) cudaCheck(cudaFreeHost(host_sums_));
    if (embedding_index_.order) embedding_grad_index_free(embedding_index_);
    if (lm_head_ws_.logits) lm_head_workspace_free(lm_head_ws_);
    if (matmul_.handle) matmul_context_free(matmul_);
    cudaCheck(cudaEventDestroy(step_start_));
    cudaCheck(cudaEventDestroy(step_end_));
    cudaCheck(cudaStreamDestroy(stream_));
  } catch (const Error& e) {
    fprintf(stderr, "warning: releasing the CUDA engine: %s\n", e.what());
  }
}

const CudaEngine::Tensor& CudaEngine::tensor(const std::string& name) const {
  for (const Tensor& t : tensors_)
    if (t.name == name) return t;
  fail("CudaEngine: the model has no parameter named ", name);
}

CudaEngine::Layer CudaEngine::layer_pointers(bf16* base, int l) const {
  const std::string p = cat("model.layers.", l, ".");
  auto at = [&](const char* name) { return base + tensor(p + name).offset; };
  return {at("input_layernorm.weight"), at("self_attn.q_proj.weight"), at("self_attn.k_proj.weight"),
          at("self_attn.v_proj.weight"), at("self_attn.o_proj.weight"), at("post_attention_layernorm.weight"),
          at("mlp.gate_proj.weight"), at("mlp.up_proj.weight"), at("mlp.down_proj.weight")};
}

CudaEngine::Globals CudaEngine::global_pointers(bf16* base) const {
  bf16* embed = base + tensor("model.embed_tokens.weight").offset;
  return {embed, base + tensor("model.norm.weight").offset,
          config_.tie_word_embeddings ? embed : base + tensor("lm_head.weight").offset};
}

// Activation buffers for N tokens. Everything in the arena is recomputed by every forward, so growing it (which
// drops its contents) is only done at the start of a forward.
void CudaEngine::ensure_tokens(int N) {
  if (N <= capacity_) return;
  const ModelConfig& c = config_;
  const size_t C = c.hidden_size, F = c.intermediate_size, H = c.num_attention_heads, L = c.num_hidden_layers;
  const size_t HD = H * c.head_dim, KD = (size_t)c.num_key_value_heads * c.head_dim, n = N;
  const int level = options_.recompute;
  auto layout = [&](Carver& k) {
    LayerActs shared{};
    if (level >= 1) {
      shared.norm1 = k.take<bf16>(n * C);
      shared.norm2 = k.take<bf16>(n * C);
      shared.act = k.take<bf16>(n * F);
    }
    auto main_buffers = [&](LayerActs& a) {
      a.q = k.take<bf16>(n * HD);
      a.k = k.take<bf16>(n * KD);
      a.v = k.take<bf16>(n * KD);
      a.att = k.take<bf16>(n * HD);
      a.resid2 = k.take<bf16>(n * C);
      a.gate = k.take<bf16>(n * F);
      a.up = k.take<bf16>(n * F);
      a.rstd1 = k.take<float>(n);
      a.rstd2 = k.take<float>(n);
      a.lse = k.take<float>(n * H);
    };
    if (level == 2) main_buffers(shared);
    acts_.assign(L, shared);
    for (LayerActs& a : acts_) {
      a.resid = k.take<bf16>(n * C);
      if (level == 0) {
        a.norm1 = k.take<bf16>(n * C);
        a.norm2 = k.take<bf16>(n * C);
        a.act = k.take<bf16>(n * F);
      }
      if (level <= 1) main_buffers(a);
    }
    branch_ = k.take<bf16>(n * C);
    final_resid_ = k.take<bf16>(n * C);
    final_norm_ = k.take<bf16>(n * C);
    final_rstd_ = k.take<float>(n);
    tokens_ = k.take<int32_t>(n);
    positions_ = k.take<int32_t>(n);
    segments_ = k.take<int32_t>(n);
    head_index_ = k.take<int32_t>(n);  // M ≤ N
    head_targets_ = k.take<int32_t>(n);
    head_sequence_ = k.take<int32_t>(n);
    head_h_ = k.take<bf16>(n * C);
    logp_ = k.take<float>(n);
    entropy_ = k.take<float>(n);
    head_lse_ = k.take<float>(n);
    dlogp_ = k.take<float>(n);
    d_resid_ = k.take<bf16>(n * C);
    d_norm_ = k.take<bf16>(n * C);
    d_att_ = k.take<bf16>(n * HD);
    d_q_ = k.take<bf16>(n * HD);
    d_k_ = k.take<bf16>(n * KD);
    d_v_ = k.take<bf16>(n * KD);
    d_act_ = k.take<bf16>(n * F);
    d_gate_ = k.take<bf16>(n * F);
    d_up_ = k.take<bf16>(n * F);
    attention_scratch_ = k.take<float>(n * H);
  };
  Carver measure;
  layout(measure);
  cudaCheck(cudaStreamSynchronize(stream_));  // nothing may still use the old arena
  if (arena_) cudaCheck(cudaFree(arena_));
  arena_ = nullptr;
  capacity_ = 0;
  cudaError_t err = cudaMalloc(&arena_, measure.offset);
  if (err != cudaSuccess) {
    cudaGetLastError();
    arena_ = nullptr;
    fail("CudaEngine: cannot allocate ", measure.offset / double(1 << 30), " GiB of activations for ", N,
         " tokens (", cudaGetErrorString(err), "). Use a smaller --batch-size or --max-length, or --recompute 2");
  }
  Carver place{static_cast<char*>(arena_)};
  layout(place);
  capacity_ = N;
  if (embedding_index_.order) embedding_grad_index_free(embedding_index_);
  embedding_index_ = embedding_grad_index_create(N);
  have_forward_ = false;
}

void CudaEngine::ensure_sequences(int sequences) {
  if (sequences <= sequence_capacity_) return;
  cudaCheck(cudaStreamSynchronize(stream_));
  for (float** p : {&seq_logp_, &seq_entropy_, &seq_tokens_, &dseq_}) {
    if (*p) cudaCheck(cudaFree(*p));
    *p = device_zeros<float>(sequences, stream_);
  }
  if (host_sums_) cudaCheck(cudaFreeHost(host_sums_));
  cudaCheck(cudaMallocHost(&host_sums_, 2 * sequences * sizeof(float)));
  sequence_capacity_ = sequences;
}

// ---- attention: ours, or cuDNN's where the build has it and the options ask ----

void CudaEngine::attention_forward_any(const LayerActs& a, const AttentionShape& shape) {
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_) return cudnn_attention_->forward(a.att, a.lse, a.q, a.k, a.v, shape, stream_);
#endif
  attention_forward(a.att, a.lse, a.q, a.k, a.v, shape, segments_, stream_);
}

void CudaEngine::attention_backward_any(const LayerActs& a, const AttentionShape& shape) {
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_)
    return cudnn_attention_->backward(d_q_, d_k_, d_v_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape, stream_);
#endif
  attention_backward(d_q_, d_k_, d_v_, attention_scratch_, d_att_, a.att, a.lse, a.q, a.k, a.v, shape, segments_,
                     stream_);
}

// ---- forward ----

void CudaEngine::layer_forward(int l, bool recompute) {
  const ModelConfig& c = config_;
  const int N = rows_ * T_, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = (float)c.rms_norm_eps;
  const AttentionShape shape{rows_, T_, H, Hkv, D, c.sliding_window};
  const Layer& w = w_layers_[l];
  const LayerActs& a = acts_[l];
  if (l == 0 || recompute)
    rmsnorm_forward(a.norm1, a.rstd1, nullptr, a.resid, nullptr, w.input_norm, N, C, eps, stream_);
  else  // resid_l = resid2_{l-1} + mlp_{l-1}, then its norm
    rmsnorm_forward(a.norm1, a.rstd1, a.resid, acts_[l - 1].resid2, branch_, w.input_norm, N, C, eps, stream_);
  matmul_bf16(matmul_, a.q, a.norm1, w.wq, N, H * D, C, false, true, 0.0f, stream_);
  matmul_bf16(matmul_, a.k, a.norm1, w.wk, N, Hkv * D, C, false, true, 0.0f, stream_);
  matmul_bf16(matmul_, a.v, a.norm1, w.wv, N, Hkv * D, C, false, true, 0.0f, stream_);
  rope_forward(a.q, positions_, inv_freq_, N, H, D, stream_);
  rope_forward(a.k, positions_, inv_freq_, N, Hkv, D, stream_);
  attention_forward_any(a, shape);
  matmul_bf16(matmul_, branch_, a.att, w.wo, N, C, H * D, false, true, 0.0f, stream_);
  rmsnorm_forward(a.norm2, a.rstd2, a.resid2, a.resid, branch_, w.post_norm, N, C, eps, stream_);
  matmul_bf16(matmul_, a.gate, a.norm2, w.w_gate, N, F, C, false, true, 0.0f, stream_);
  matmul_bf16(matmul_, a.up, a.norm2, w.w_up, N, F, C, false, true, 0.0f, stream_);
  swiglu_forward(a.act, a.gate, a.up, N, F, stream_);
  // The MLP output only feeds the next residual add, which backward never needs again.
  if (!recompute) matmul_bf16(matmul_, branch_, a.act, w.w_down, N, C, F, false, true, 0.0f, stream_);
}

void CudaEngine::layer_restore(int l) {
  if (options_.recompute == 2) {
    layer_forward(l, true);
  } else if (options_.recompute == 1) {
    const int N = rows_ * T_, C = config_.hidden_size;
    const float eps = (float)config_.rms_norm_eps;
    const Layer& w = w_layers_[l];
    const LayerActs& a = acts_[l];
    rmsnorm_forward(a.norm1, a.rstd1, nullptr, a.resid, nullptr, w.input_norm, N, C, eps, stream_);
    rmsnorm_forward(a.norm2, a.rstd2, nullptr, a.resid2, nullptr, w.post_norm, N, C, eps, stream_);
    swiglu_forward(a.act, a.gate, a.up, N, config_.intermediate_size, stream_);
  }
}

void CudaEngine::forward(const PairBatch& batch, std::vector<double>& logp_sum, std::vector<double>& entropy_sum) {
  const ModelConfig& c = config_;
  pair_batch_validate(batch, c.vocab_size);
  const TokenBatch& t = batch.tokens;
  STAPO_CHECK(t.rows <= 65535, "PairBatch: ", t.rows, " rows exceed the attention kernel's grid limit of 65535");
  const int N = t.rows * t.T, sequences = 2 * batch.num_pairs;
  ensure_tokens(N);
  ensure_sequences(sequences);
  rows_ = t.rows;
  T_ = t.T;
  sequences_ = sequences;
  host_tokens_ = t.tokens;
  std::vector<int32_t> index, targets, sequence;  // the response positions, in order
  for (int i = 0; i < N; ++i)
    if (batch.response_sequence[i] >= 0) {
      index.push_back(i);
      targets.push_back(t.targets[i]);
      sequence.push_back(batch.response_sequence[i]);
    }
  head_rows_ = (int)index.size();
  // Pageable sources: each copy returns once staged, in stream order after the previous step's kernels.
  const size_t bytes = (size_t)N * sizeof(int32_t), head_bytes = (size_t)head_rows_ * sizeof(int32_t);
  cudaCheck(cudaMemcpyAsync(tokens_, t.tokens.data(), bytes, cudaMemcpyHostToDevice, stream_));
  cudaCheck(cudaMemcpyAsync(positions_, t.positions.data(), bytes, cudaMemcpyHostToDevice, stream_));
  cudaCheck(cudaMemcpyAsync(segments_, t.segments.data(), bytes, cudaMemcpyHostToDevice, stream_));
#ifdef STAPO_HAVE_CUDNN
  if (cudnn_attention_) cudnn_attention_->set_rows(t.segments, t.rows, t.T, stream_);
#endif
  if (head_rows_ > 0) {
    cudaCheck(cudaMemcpyAsync(head_index_, index.data(), head_bytes, cudaMemcpyHostToDevice, stream_));
    cudaCheck(cudaMemcpyAsync(head_targets_, targets.data(), head_bytes, cudaMemcpyHostToDevice, stream_));
    cudaCheck(cudaMemcpyAsync(head_sequence_, sequence.data(), head_bytes, cudaMemcpyHostToDevice, stream_));
  }

  const int C = c.hidden_size, L = c.num_hidden_layers;
  embedding_forward(acts_[0].resid, tokens_, w_.embed, N, C, stream_);
  for (int l = 0; l < L; ++l) layer_forward(l, false);
  rmsnorm_forward(final_norm_, final_rstd_, final_resid_, acts_[L - 1].resid2, branch_, w_.final_norm, N, C,
                  (float)c.rms_norm_eps, stream_);
  const int M = head_rows_;
  rows_copy(head_h_, final_norm_, head_index_, M, C, false, stream_);
  lm_head_forward(matmul_, lm_head_ws_, logp_, entropy_, head_lse_, head_h_, w_.lm_head, head_targets_, M, C,
                  c.vocab_size, stream_);
  sequence_sums(seq_logp_, seq_entropy_, seq_tokens_, logp_, entropy_, head_sequence_, M, sequences, stream_);
  cudaCheck(cudaMemcpyAsync(host_sums_, seq_logp_, sequences * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaMemcpyAsync(host_sums_ + sequences, seq_entropy_, sequences * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  logp_sum.assign(host_sums_, host_sums_ + sequences);
  entropy_sum.assign(host_sums_ + sequences, host_sums_ + 2 * sequences);
  have_forward_ = true;

  double tokens = 0, causal_pairs = 0;
  batch_flop_counts(t, &tokens, &causal_pairs);
  forward_flops_ = model_forward_flops(c, tokens, causal_pairs);
  if (step_open_) step_flops_ += forward_flops_;
  sample_memory();
}

// ---- backward ----

void CudaEngine::backward(const std::vector<double>& dlogp_sum) {
  STAPO_CHECK(have_forward_, "CudaEngine::backward called before forward");
  STAPO_CHECK((int)dlogp_sum.size() == sequences_, "CudaEngine::backward: ", dlogp_sum.size(),
              " sequence gradients for a batch of ", sequences_, " sequences");
  const ModelConfig& c = config_;
  const int N = rows_ * T_, C = c.hidden_size, F = c.intermediate_size, D = c.head_dim, V = c.vocab_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const AttentionShape shape{rows_, T_, H, Hkv, D, c.sliding_window};
  const std::vector<float> dseq(dlogp_sum.begin(), dlogp_sum.end());
  cudaCheck(cudaMemcpyAsync(dseq_, dseq.data(), sequences_ * sizeof(float), cudaMemcpyHostToDevice, stream_));
  const int M = head_rows_;
  token_dlogp(dlogp_, dseq_, head_sequence_, M, stream_);
  embedding_grad_index_build(embedding_index_, host_tokens_.data(), N, V, stream_);

  // dh of the response rows into branch_ (free until the layers' backward), scattered into the zeroed (N, C).
  lm_head_backward(matmul_, lm_head_ws_, branch_, g_.lm_head, dlogp_, head_lse_, head_h_, w_.lm_head, head_targets_, M,
                   C, V, stream_);
  cudaCheck(cudaMemsetAsync(d_norm_, 0, (size_t)N * C * sizeof(bf16), stream_));
  rows_copy(d_norm_, branch_, head_index_, M, C, true, stream_);
  cudaCheck(cudaMemsetAsync(d_resid_, 0, (size_t)N * C * sizeof(bf16), stream_));
  rmsnorm_backward(d_resid_, g_.final_norm, rmsnorm_scratch_, d_norm_, final_resid_, w_.final_norm, final_rstd_, N, C,
                   stream_);
  // d_resid_ holds the residual stream's gradient; each branch's backward adds to it (rmsnorm_backward +=).
  for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
    layer_restore(l);
    const Layer& w = w_layers_[l];
    const Layer& g = g_layers_[l];
    const LayerActs& a = acts_[l];
    // MLP branch: resid_{l+1} = resid2 + act·Wdᵀ.
    matmul_bf16(matmul_, d_act_, d_resid_, w.w_down, N, F, C, false, false, 0.0f, stream_);
    matmul_bf16(matmul_, g.w_down, d_resid_, a.act, C, F, N, true, false, 1.0f, stream_);
    swiglu_backward(d_gate_, d_up_, d_act_, a.gate, a.up, N, F, stream_);
    matmul_bf16(matmul_, d_norm_, d_gate_, w.w_gate, N, C, F, false, false, 0.0f, stream_);
    matmul_bf16(matmul_, d_norm_, d_up_, w.w_up, N, C, F, false, false, 1.0f, stream_);
    matmul_bf16(matmul_, g.w_gate, d_gate_, a.norm2, F, C, N, true, false, 1.0f, stream_);
    matmul_bf16(matmul_, g.w_up, d_up_, a.norm2, F, C, N, true, false, 1.0f, stream_);
    rmsnorm_backward(d_resid_, g.post_norm, rmsnorm_scratch_, d_norm_, a.resid2, w.post_norm, a.rstd2, N, C,
                     stream_);
    // Attention branch: resid2 = resid + att·Woᵀ.
    matmul_bf16(matmul_, d_att_, d_resid_, w.wo, N, H * D, C, false, false, 0.0f, stream_);
    matmul_bf16(matmul_, g.wo, d_resid_, a.att, C, H * D, N, true, false, 1.0f, stream_);
    attention_backward_any(a, shape);
    rope_backward(d_q_, positions_, inv_freq_, N, H, D, stream_);
    rope_backward(d_k_, positions_, inv_freq_, N, Hkv, D, stream_);
    matmul_bf16(matmul_, d_norm_, d_q_, w.wq, N, C, H * D, false, false, 0.0f, stream_);
    matmul_bf16(matmul_, d_norm_, d_k_, w.wk, N, C, Hkv * D, false, false, 1.0f, stream_);
    matmul_bf16(matmul_, d_norm_, d_v_, w.wv, N, C, Hkv * D, false, false, 1.0f, stream_);
    matmul_bf16(matmul_, g.wq, d_q_, a.norm1, H * D, C, N, true, false, 1.0f, stream_);
    matmul_bf16(matmul_, g.wk, d_k_, a.norm1, Hkv * D, C, N, true, false, 1.0f, stream_);
    matmul_bf16(matmul_, g.wv, d_v_, a.norm1, Hkv * D, C, N, true, false, 1.0f, stream_);
    rmsnorm_backward(d_resid_, g.input_norm, rmsnorm_scratch_, d_norm_, a.resid, w.input_norm, a.rstd1, N, C,
                     stream_);
  }
  embedding_backward(g_.embed, d_resid_, embedding_index_, C, stream_);
  if (step_open_) step_flops_ += 2 * forward_flops_;
  sample_memory();
}

// ---- optimizer ----

void CudaEngine::run_pairs(const PairBatch& batch, const LossConfig& loss, const StepScale& scale, bool backward) {
  std::vector<double> seq_logp, seq_entropy;
  forward(batch, seq_logp, seq_entropy);
  const int pairs = batch.num_pairs, sequences = 2 * pairs;
  std::vector<double> seq_tokens(batch.response_length.begin(), batch.response_length.end()), dseq(sequences);
  std::vector<PairLoss<double>> losses(pairs);
  const float* ref = batch.reference_logps.empty() ? nullptr : batch.reference_logps.data();
  pair_loss(losses.data(), dseq.data(), seq_logp.data(), seq_tokens.data(), ref, loss, scale.nll_weight(),
            1.0 / scale.pairs, pairs);
  append_pair_results(results_.pairs, batch, seq_logp.data(), seq_entropy.data(), seq_tokens.data(), losses.data());
  for (const PairLoss<double>& l : losses) step_has_nonfinite_loss_ |= !std::isfinite(l.loss);
  if (backward) this->backward(dseq);
}

StepResults CudaEngine::take_results() {
  StepResults out = std::move(results_);
  results_ = StepResults{};
  return out;
}

void CudaEngine::zero_grad() {
  step_has_nonfinite_loss_ = false;
  finish_step();
  cudaCheck(cudaMemsetAsync(grads_, 0, total_ * sizeof(bf16), stream_));
  cudaCheck(cudaEventRecord(step_start_, stream_));
  step_open_ = true;
  step_flops_ = 0;
}

double CudaEngine::grad_sum_squares() {
  grad_norm_accumulate(norm_partials_, grads_, total_, false, stream_);
  grad_norm_finish(scalars_, scalars_ + 1, norm_partials_, 0.0f, stream_);
  float norm = 0;
  cudaCheck(cudaMemcpyAsync(&norm, scalars_, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  return double(norm) * double(norm);
}

void CudaEngine::optimizer_step(const OptimizerUpdate& update) {
  const double norm = std::sqrt(grad_sum_squares());
  results_.grad_norm = norm;
  results_.updated = std::isfinite(norm) && !step_has_nonfinite_loss_;
  if (!results_.updated) return;
  const double lr = update.lr;
  const AdamWConfig& config = update.adamw;
  const int64_t t = update.t;
  STAPO_CHECK(t >= 1 && t <= INT32_MAX, "CudaEngine::optimizer_step: step ", t, " out of range");
  const float scale = (float)grad_clip_factor(norm, update.max_grad_norm);
  cudaCheck(cudaMemcpyAsync(scalars_ + 2, &scale, sizeof(float), cudaMemcpyHostToDevice, stream_));
  AdamWHyper hyper;
  hyper.lr = (float)lr;
  hyper.beta1 = (float)config.beta1;
  hyper.beta2 = (float)config.beta2;
  hyper.eps = (float)config.eps;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& p = tensors_[i];
    hyper.weight_decay = p.is_norm ? 0.0f : (float)config.weight_decay;
    // Stochastic rounding needs fresh bits per tensor and step.
    const uint32_t seed = (uint32_t)mix64(options_.seed ^ mix64((uint64_t)t * 1000003u + i));
    adamw_update(params_ + p.offset, master_ ? master_ + p.offset : nullptr, grads_ + p.offset, m_ + p.offset,
                 v_ + p.offset, p.numel, hyper, (int)t, scalars_ + 2, seed, stream_);
  }
  if (step_open_) {
    cudaCheck(cudaEventRecord(step_end_, stream_));
    step_open_ = false;
    step_pending_ = true;
  }
  sample_memory();
  if (options_.report_every_s <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_report_).count() < options_.report_every_s) return;
  finish_step();
  last_report_ = now;
  if (report_stats_.steps > 0 && report_stats_.seconds > 0) {
    report_stats_.peak_bytes = peak_used_;
    // On a terminal the trainer's progress bar is being redrawn in place: clear its line first.
    fprintf(stderr, "%sdevice: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "",
            step_stats_summary(report_stats_, options_.peak_tflops).c_str());
  }
  report_stats_ = CudaStepStats{};
}

void CudaEngine::finish_step() {
  if (!step_pending_) return;
  cudaCheck(cudaEventSynchronize(step_end_));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, step_start_, step_end_));
  step_pending_ = false;
  for (CudaStepStats* s : {&stats_, &report_stats_, &last_step_stats_}) {
    s->steps++;
    s->seconds += ms / 1e3;
    s->model_flops += step_flops_;
  }
}

CudaStepStats CudaEngine::take_step_stats() {
  finish_step();
  CudaStepStats out = stats_;
  out.peak_bytes = peak_used_;
  stats_ = CudaStepStats{};
  return out;
}

Engine::StepReport CudaEngine::step_report() {
  finish_step();
  const CudaStepStats s = last_step_stats_;
  last_step_stats_ = CudaStepStats{};
  StepReport report;
  if (s.steps == 0 || s.seconds <= 0) return report;  // a skipped (non-finite) step ran no update
  const double tflops = model_tflops(s);
  const double gib = peak_used_ / double(1 << 30);
  report.metrics["step_time_s"] = s.seconds / double(s.steps);
  report.metrics["tflops"] = tflops;
  char text[96] = "";
  if (options_.peak_tflops > 0) {
    report.metrics["mfu"] = tflops / options_.peak_tflops;
    snprintf(text, sizeof(text), "MFU %.1f%% ", 100.0 * tflops / options_.peak_tflops);
  }
  report.metrics["peak_memory_gib"] = gib;
  report.progress = text;
  snprintf(text, sizeof(text), "mem %.2f GiB", gib);
  report.progress += text;
  return report;
}

void CudaEngine::sample_memory() {
  peak_used_ = std::max(peak_used_, device_bytes_in_use());
}

double CudaEngine::device_bytes_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
  return double(total_bytes - free_bytes) - double(baseline_used_);
}

// ---- host copies, checkpoints ----

std::vector<float> CudaEngine::parameter_to_host(size_t index, bool grad) {
  STAPO_CHECK(index < tensors_.size(), "CudaEngine: parameter index ", index, " of ", tensors_.size());
  const Tensor& t = tensors_[index];
  std::vector<float> out(t.numel);
  if (!grad && master_) {
    cudaCheck(cudaMemcpyAsync(out.data(), master_ + t.offset, t.numel * sizeof(float), cudaMemcpyDeviceToHost,
                              stream_));
    cudaCheck(cudaStreamSynchronize(stream_));
    return out;
  }
  std::vector<bf16> raw(t.numel);
  cudaCheck(cudaMemcpyAsync(raw.data(), (grad ? grads_ : params_) + t.offset, t.numel * sizeof(bf16),
                            cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < t.numel; ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

std::unique_ptr<CpuModel<float>> CudaEngine::weights_to_cpu() {
  auto model = std::make_unique<CpuModel<float>>(config_);
  std::vector<Parameter<float>>& params = model->parameters();
  STAPO_CHECK(params.size() == tensors_.size(), "CudaEngine: ", tensors_.size(), " tensors but the CPU model has ",
              params.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const std::vector<float> host = parameter_to_host(i, false);
    STAPO_CHECK(host.size() == params[i].numel && params[i].name == tensors_[i].name, "CudaEngine: tensor ",
                tensors_[i].name, " does not match the CPU model's ", params[i].name);
    std::copy(host.begin(), host.end(), params[i].data);
  }
  return model;
}

void CudaEngine::save_model(const std::string& dir) {
  make_directories(dir);
  std::vector<std::vector<float>> host(tensors_.size());
  std::vector<TensorToWrite<float>> out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    host[i] = parameter_to_host(i, false);
    out.push_back({tensors_[i].name, tensors_[i].shape, host[i].data()});
  }
  // The master weights in F32; bf16-only weights in BF16: both exact, so a resume continues bit for bit.
  const DType dtype = master_ ? DType::F32 : DType::BF16;
  safetensors_write(dir, out, dtype);
  write_file_atomic(dir + "/config.json", config_to_json(config_, master_ ? "float32" : "bfloat16"));
}

void CudaEngine::save_optimizer(const std::string& path) {
  size_t count = 0;
  for (const Tensor& t : tensors_) count += t.numel;
  std::vector<float> m(count), v(count);
  size_t at = 0;
  for (const Tensor& t : tensors_) {
    cudaCheck(cudaMemcpyAsync(m.data() + at, m_ + t.offset, t.numel * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    cudaCheck(cudaMemcpyAsync(v.data() + at, v_ + t.offset, t.numel * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    at += t.numel;
  }
  cudaCheck(cudaStreamSynchronize(stream_));
  optimizer_state_write(path, m.data(), v.data(), count);
}

void CudaEngine::load_optimizer(const std::string& path) {
  size_t count = 0;
  for (const Tensor& t : tensors_) count += t.numel;
  std::vector<float> m(count), v(count);
  optimizer_state_read(path, m.data(), v.data(), count);
  size_t at = 0;
  for (const Tensor& t : tensors_) {
    cudaCheck(cudaMemcpyAsync(m_ + t.offset, m.data() + at, t.numel * sizeof(float), cudaMemcpyHostToDevice, stream_));
    cudaCheck(cudaMemcpyAsync(v_ + t.offset, v.data() + at, t.numel * sizeof(float), cudaMemcpyHostToDevice, stream_));
    at += t.numel;
  }
  cudaCheck(cudaStreamSynchronize(stream_));  // m and v are freed on return
}

double model_tflops(const CudaStepStats& s) { return s.model_flops / s.seconds / 1e12; }

std::string step_stats_summary(const CudaStepStats& s, double peak_tflops) {
  const double tflops = model_tflops(s);
  char line[256];
  snprintf(line, sizeof(line), "%lld steps at %.1f ms, %.1f model TFLOP/s", (long long)s.steps,
           1e3 * s.seconds / s.steps, tflops);
  std::string out = line;
  if (peak_tflops > 0) {
    snprintf(line, sizeof(line), ", MFU %.1f%% of %.0f", 100.0 * tflops / peak_tflops, peak_tflops);
    out += line;
  }
  snprintf(line, sizeof(line), ", peak device memory %.2f GiB", s.peak_bytes / double(1 << 30));
  return out + line;
}

std::string CudaEngine::description() const {
  size_t count = 0;
  for (const Tensor& t : tensors_) count += t.numel;
  return cat("cuda bf16, ", master_ ? "fp32 master weights" : "bf16 weights with stochastic rounding",
             ", recompute ", options_.recompute,
             options_.attention == AttentionPath::cudnn ? ", cuDNN attention" : "", ", ", count, " parameters, ",
             cuda_device_description());
}

}  // namespace stapo
