// Model FLOPs and the bf16 peak table (train/model_flops.h).
#include "train/model_flops.h"

namespace stapo {

double model_forward_flops(const ModelConfig& c, double tokens, double causal_pairs) {
  const double C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const double HD = double(c.num_attention_heads) * c.head_dim, KD = double(c.num_key_value_heads) * c.head_dim;
  const double per_token_layer = 2 * C * (HD + 2 * KD) + 2 * HD * C + 2 * 3 * C * F;
  const double attention = L * 2 * 2 * HD * causal_pairs;  // q·kᵀ and p·v
  return tokens * (L * per_token_layer + 2 * C * V) + attention;
}

void batch_flop_counts(const TokenBatch& b, double* tokens, double* causal_pairs) {
  *tokens = 0;
  *causal_pairs = 0;
  for (int r = 0; r < b.rows; ++r) {
    double run = 0;  // length of the current sequence (a run of one segment id) so far
    for (int p = 0; p < b.T; ++p) {
      const int32_t s = b.segments[(size_t)r * b.T + p];
      const bool continues = p > 0 && s == b.segments[(size_t)r * b.T + p - 1];
      run = s < 0 ? 0 : continues ? run + 1 : 1;
      if (s < 0) continue;
      *tokens += 1;
      *causal_pairs += run;  // this query sees `run` keys: Σ over a sequence = len·(len+1)/2
    }
  }
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
