// Sequence sums, per-pair loss through model/ops/preference_loss.h, and the per-token gradient (see
// preference_loss.h).
#include "kernels/cuda_common.h"
#include "kernels/device_utils.cuh"
#include "kernels/preference_loss.h"

namespace stapo {

// ---- kernels ----

// Block per sequence; each thread strides over the tokens, then one fixed-order block reduction.
__global__ void sequence_sums_kernel(float* seq_logp, float* seq_entropy, float* seq_tokens, const float* logp,
                                     const float* entropy, const int32_t* response_sequence, int N) {
  const int s = blockIdx.x;
  float sum_logp = 0.0f, sum_entropy = 0.0f, count = 0.0f;
  for (int t = threadIdx.x; t < N; t += blockDim.x)
    if (response_sequence[t] == s) {
      sum_logp += logp[t];
      if (entropy) sum_entropy += entropy[t];
      count += 1.0f;
    }
  sum_logp = block_sum(sum_logp);
  if (seq_entropy) sum_entropy = block_sum(sum_entropy);  // the same branch in every thread of the block
  count = block_sum(count);
  if (threadIdx.x == 0) {
    seq_logp[s] = sum_logp;
    if (seq_entropy) seq_entropy[s] = sum_entropy;
    seq_tokens[s] = count;
  }
}

__global__ void pair_loss_kernel(PairLoss<float>* losses, float* dseq, const float* seq_logp,
                                 const float* seq_tokens, const float* reference_logps, LossConfig config,
                                 float nll_weight, float grad_scale, int num_pairs, int* nonfinite,
                                 const float* seq_prompt_logp, float* dprompt) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= num_pairs) return;
  PairLogps<float> in;
  in.logp_chosen = seq_logp[2 * i];
  in.logp_rejected = seq_logp[2 * i + 1];
  in.len_chosen = seq_tokens[2 * i];
  in.len_rejected = seq_tokens[2 * i + 1];
  in.ref_chosen = reference_logps ? reference_logps[2 * i] : 0.0f;
  in.ref_rejected = reference_logps ? reference_logps[2 * i + 1] : 0.0f;
  if (seq_prompt_logp) in.prompt_chosen = seq_prompt_logp[2 * i];
  const PairLoss<float> out = loss_pair(config, in, nll_weight);
  losses[i] = out;
  dseq[2 * i] = grad_scale * out.dloss_dlogp_chosen;
  dseq[2 * i + 1] = grad_scale * out.dloss_dlogp_rejected;
  if (dprompt) {
    dprompt[2 * i] = grad_scale * out.dloss_dlogp_prompt;
    dprompt[2 * i + 1] = 0.0f;
  }
  if (nonfinite && !isfinite(out.loss)) atomicExch(nonfinite, 1);
}

__global__ void token_dlogp_kernel(float* dlogp, const float* dseq, const int32_t* response_sequence, int N) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= N) return;
  const int s = response_sequence[t];
  dlogp[t] = s >= 0 ? dseq[s] : 0.0f;
}

__global__ void token_dlogp_prompt_kernel(float* dlogp, const float* dprompt, const int32_t* prompt_sequence, int N) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= N) return;
  const int s = prompt_sequence[t];
  if (s >= 0) dlogp[t] += dprompt[s];
}

// ---- launchers ----

void sequence_sums(float* seq_logp, float* seq_entropy, float* seq_tokens, const float* logp, const float* entropy,
                   const int32_t* response_sequence, int N, int num_sequences, cudaStream_t stream) {
  STAPO_CHECK(num_sequences > 0 && num_sequences % 2 == 0, "sequence_sums: num_sequences = ", num_sequences,
              " must be 2·(number of pairs)");
  sequence_sums_kernel<<<num_sequences, 256, 0, stream>>>(seq_logp, seq_entropy, seq_tokens, logp, entropy,
                                                          response_sequence, N);
  cudaCheck(cudaGetLastError());
}

void pair_loss(PairLoss<float>* losses, float* dseq, const float* seq_logp, const float* seq_tokens,
               const float* reference_logps, const LossConfig& config, float nll_weight, float grad_scale,
               int num_pairs, int* nonfinite, cudaStream_t stream, const float* seq_prompt_logp, float* dprompt) {
  STAPO_CHECK(num_pairs > 0, "pair_loss: num_pairs = ", num_pairs, " must be positive");
  STAPO_CHECK(reference_logps != nullptr || !reward_uses_reference(config.reward),
              "pair_loss: this reward needs reference log-probs; run the reference pass over the data first");
  pair_loss_check_prompt(config, seq_prompt_logp, dprompt);
  pair_loss_kernel<<<ceil_div(num_pairs, 128), 128, 0, stream>>>(losses, dseq, seq_logp, seq_tokens, reference_logps,
                                                                 config, nll_weight, grad_scale, num_pairs,
                                                                 nonfinite, seq_prompt_logp, dprompt);
  cudaCheck(cudaGetLastError());
}

void token_dlogp(float* dlogp, const float* dseq, const int32_t* response_sequence, int N, cudaStream_t stream) {
  if (N == 0) return;
  token_dlogp_kernel<<<ceil_div(N, 256), 256, 0, stream>>>(dlogp, dseq, response_sequence, N);
  cudaCheck(cudaGetLastError());
}

void token_dlogp_prompt(float* dlogp, const float* dprompt, const int32_t* prompt_sequence, int N,
                        cudaStream_t stream) {
  if (N == 0) return;
  token_dlogp_prompt_kernel<<<ceil_div(N, 256), 256, 0, stream>>>(dlogp, dprompt, prompt_sequence, N);
  cudaCheck(cudaGetLastError());
}

}  // namespace stapo
