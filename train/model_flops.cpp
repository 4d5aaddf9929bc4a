// Model FLOPs and the bf16 peak table (train/model_flops.h).
#include "train/model_flops.h"

namespace stapo {

double model_forward_flops(const ModelConfig& c, double tokens, double causal_pairs, double lm_head_rows) {
  const double C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const double HD = double(c.num_attention_heads) * c.head_dim, KD = double(c.num_key_value_heads) * c.head_dim;
  const double per_token_layer = 2 * C * (HD + 2 * KD) + 2 * HD * C + 2 * 3 * C * F;
  const double attention = L * 2 * 2 * HD * causal_pairs;  // q·kᵀ and p·v
  return tokens * L * per_token_layer + lm_head_rows * 2 * C * V + attention;
}

BatchFlopCounts batch_flop_counts(const PairBatch& batch) {
  const TokenBatch& b = batch.tokens;
  BatchFlopCounts n;
  for (int r = 0; r < b.rows; ++r) {
    double run = 0;  // length of the current sequence (a run of one segment id) so far
    for (int p = 0; p < b.T; ++p) {
      const int32_t s = b.segments[(size_t)r * b.T + p];
      const bool continues = p > 0 && s == b.segments[(size_t)r * b.T + p - 1];
      run = s < 0 ? 0 : continues ? run + 1 : 1;
      if (s < 0) continue;
      n.tokens += 1;
      n.causal_pairs += run;  // this query sees `run` keys: Σ over a sequence = len·(len+1)/2
    }
  }
  for (int32_t s : batch.response_sequence) n.response_rows += s >= 0;
  return n;
}

double batch_forward_flops_needed(const ModelConfig& c, const BatchFlopCounts& n) {
  return model_forward_flops(c, n.tokens, n.causal_pairs, n.response_rows);
}

double batch_forward_flops_all_tokens(const ModelConfig& c, const BatchFlopCounts& n) {
  return model_forward_flops(c, n.tokens, n.causal_pairs, n.tokens);
}

double peak_bf16_tflops(const std::string& name) {
  const struct {
    const char* part;
    double tflops;
  } table[] = {{"H100", 989.0}, {"H200", 989.0}, {"A100", 312.0}};
  for (const auto& row : table)
    if (name.find(row.part) != std::string::npos) return row.tflops;
  return 0.0;
}

}  // namespace stapo
