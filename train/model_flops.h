// Model FLOPs and MFU. Per token and layer 2·C·(H·D + 2·Hkv·D) (q, k, v) + 2·H·D·C (o) + 2·3·C·F (MLP);
// causal attention 2·2·H·D per visible (query, key) pair (len·(len+1)/2 pairs per sequence, the sliding window
// ignored); the lm_head 2·C·V per row it runs on. A training step is 3 × the forward. Padding is not counted:
// it is work, not model FLOPs.
// Two counts differ only in the lm_head's rows:
//   needed:      the rows whose log-prob enters the loss (the response positions, what the CUDA engine runs it
//                on): what the objective needs, the count MFU reports;
//   all tokens:  every non-padding token, as a trainer that materialises all logits does (the count MFU used
//                before engine v2, kept beside it, labelled, for comparison with earlier numbers).
// dev/bench/torch_baseline.py's model_flops_per_step computes both with the same formula.
#pragma once
#include <string>

#include "model/batch.h"   // defines: PairBatch
#include "model/config.h"  // defines: ModelConfig

namespace stapo {

// Forward FLOPs for `tokens` tokens with `causal_pairs` visible attention pairs in all and the lm_head on
// `lm_head_rows` rows.
double model_forward_flops(const ModelConfig& config, double tokens, double causal_pairs, double lm_head_rows);

struct BatchFlopCounts {
  double tokens = 0;         // non-padding positions
  double causal_pairs = 0;   // Σ len·(len+1)/2 over the batch's sequences (the segments of each row)
  double response_rows = 0;  // positions with response_sequence ≥ 0 (the lm_head's rows in the CUDA engine)
};
BatchFlopCounts batch_flop_counts(const PairBatch& batch);
// The two forward counts of a batch (see the header comment).
double batch_forward_flops_needed(const ModelConfig& config, const BatchFlopCounts& counts);
double batch_forward_flops_all_tokens(const ModelConfig& config, const BatchFlopCounts& counts);

// Dense bf16 tensor-core peak in TFLOP/s of a device named like "NVIDIA H100 80GB HBM3", 0 when unknown.
// The same numbers as dev/bench/gpu_step_config.json's peak_bf16_tflops.
double peak_bf16_tflops(const std::string& device_name);

}  // namespace stapo
