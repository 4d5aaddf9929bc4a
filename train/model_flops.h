// Model FLOPs and MFU, counted exactly as dev/bench/torch_baseline.py's model_flops_per_step so that our
// numbers and PyTorch's are comparable: per token and layer 2·C·(H·D + 2·Hkv·D) (q, k, v) + 2·H·D·C (o) +
// 2·3·C·F (MLP), plus 2·C·V for the lm_head, plus causal attention 2·2·H·D per visible (query, key) pair
// (len·(len+1)/2 pairs per sequence, the sliding window ignored); a training step is 3 × the forward.
// Padding is not counted: it is work, not model FLOPs.
#pragma once
#include <string>

#include "model/batch.h"   // defines: TokenBatch
#include "model/config.h"  // defines: ModelConfig

namespace stapo {

// Forward FLOPs for `tokens` tokens with `causal_pairs` visible attention pairs in all.
double model_forward_flops(const ModelConfig& config, double tokens, double causal_pairs);
// Non-padding tokens and Σ len·(len+1)/2 over the batch's sequences (the segments of each row).
void batch_flop_counts(const TokenBatch& batch, double* tokens, double* causal_pairs);
// Dense bf16 tensor-core peak in TFLOP/s of a device named like "NVIDIA H100 80GB HBM3", 0 when unknown.
// The same numbers as dev/bench/gpu_step_config.json's peak_bf16_tflops.
double peak_bf16_tflops(const std::string& device_name);

}  // namespace stapo
