// The engine-independent part of train/engine.h.
#include "train/engine.h"

namespace stapo {

void append_pair_results(std::vector<PairResult>& out, const PairBatch& batch, const double* seq_logp,
                         const double* seq_entropy, const double* seq_tokens, const PairLoss<double>* losses,
                         const double* seq_prompt_logp, const double* seq_prompt_tokens) {
  const float* ref = batch.reference_logps.empty() ? nullptr : batch.reference_logps.data();
  for (int i = 0; i < batch.num_pairs; i++) {
    PairResult r;
    r.pair_id = batch.pair_ids[i];
    r.logps = {seq_logp[2 * i],       seq_logp[2 * i + 1],    seq_tokens[2 * i],
               seq_tokens[2 * i + 1], ref ? ref[2 * i] : 0.0, ref ? ref[2 * i + 1] : 0.0};
    if (seq_prompt_logp) {
      r.logps.prompt_chosen = seq_prompt_logp[2 * i];
      r.logps.prompt_tokens_chosen = seq_prompt_tokens[2 * i];
    }
    r.entropy_chosen = seq_entropy[2 * i];
    r.entropy_rejected = seq_entropy[2 * i + 1];
    r.loss = losses[i];
    out.push_back(r);
  }
}

}  // namespace stapo
