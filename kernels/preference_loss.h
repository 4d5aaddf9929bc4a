// The end of the fused final reduction: per-token log-probs → per-sequence sums → per-pair loss and its
// gradient → per-token dlogp for lm_head_backward. The per-pair step (S → z → ℓ → dℓ/dS) is
// model/ops/preference_loss.h's loss_pair, the function the CPU engine calls through the CPU twins of these
// three launchers (same names, same contract, declared in that header).
//   sequence_sums:  seq_logp[s] = Σ_{t: response_sequence[t] = s} logp[t]   (S(y)); seq_entropy[s] likewise
//                   (both entropy pointers may be null: not summed); seq_tokens[s] = |y| (the count of such t).
//                   With a prompt_sequence in place of response_sequence: the prompt's P and |x| − 1
//   pair_loss:      pair i = sequences (2i, 2i+1) = (chosen, rejected); losses[i] = loss_pair(...);
//                   dseq[s] = grad_scale · ∂ℓ/∂S(s)  (grad_scale = 1/B for the batch mean, divided further
//                   under gradient accumulation); *nonfinite (when given) is set to 1 if any losses[i].loss is
//                   not finite (never cleared here: the engine zeroes it per optimizer step). seq_prompt_logp
//                   (2B, P of each sequence; only 2i is read) and dprompt (2B: grad_scale · ∂ℓ_i/∂P_w at 2i, 0 at
//                   2i + 1) may be null unless loss_uses_prompt(config)
//   token_dlogp:    dlogp[t] = dseq[response_sequence[t]], 0 where response_sequence[t] < 0
//   token_dlogp_prompt: dlogp[t] += dprompt[prompt_sequence[t]] where prompt_sequence[t] ≥ 0 (after token_dlogp)
// Layouts: logp, entropy, dlogp, response_sequence, prompt_sequence (N); seq_*, dseq and dprompt (2B);
// reference_logps (2B) or nullptr when the reward needs none; losses (B); nonfinite (1) or nullptr. An engine that
// keeps the results of several batches passes pointers offset into longer arrays (sequence s of the batch at
// seq_*[s]). Every response must have at least one token (the dataloader drops empty ones); an empty one gives
// NaN, not a silent zero.
// Sums are deterministic: one block per sequence reduces in a fixed order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "model/ops/preference_loss.h"  // defines: LossConfig, PairLoss, loss_pair

namespace stapo {

void sequence_sums(float* seq_logp, float* seq_entropy, float* seq_tokens, const float* logp, const float* entropy,
                   const int32_t* response_sequence, int N, int num_sequences, cudaStream_t stream);

void pair_loss(PairLoss<float>* losses, float* dseq, const float* seq_logp, const float* seq_tokens,
               const float* reference_logps, const LossConfig& config, float nll_weight, float grad_scale,
               int num_pairs, int* nonfinite, cudaStream_t stream, const float* seq_prompt_logp = nullptr,
               float* dprompt = nullptr);

void token_dlogp(float* dlogp, const float* dseq, const int32_t* response_sequence, int N, cudaStream_t stream);

void token_dlogp_prompt(float* dlogp, const float* dprompt, const int32_t* prompt_sequence, int N,
                        cudaStream_t stream);

}  // namespace stapo
