// The engine-independent part of train/engine.h.
#include "train/engine.h"

namespace stapo {

namespace {

template <typename F>
PairLoss<double> to_double(const PairLoss<F>& l) {
  // Every field of PairLoss: a field added there must be added here (the size check stops the build until it is).
  static_assert(sizeof(PairLoss<F>) == 11 * sizeof(F), "PairLoss changed: convert its new fields here");
  return {l.loss,
          l.preference,
          l.delta,
          l.z,
          l.dloss_dz,
          l.dloss_dlogp_chosen,
          l.dloss_dlogp_rejected,
          l.dloss_dlogp_prompt,
          l.reward_chosen,
          l.reward_rejected,
          l.nll_chosen};
}

}  // namespace

template <typename F>
void append_pair_results(std::vector<PairResult>& out, int num_pairs, const int64_t* pair_ids, const float* ref,
                         const F* seq_logp, const F* seq_entropy, const F* seq_tokens, const PairLoss<F>* losses,
                         const F* seq_prompt_logp, const F* seq_prompt_tokens) {
  for (int i = 0; i < num_pairs; i++) {
    PairResult r;
    r.pair_id = pair_ids[i];
    r.logps = {double(seq_logp[2 * i]),       double(seq_logp[2 * i + 1]), double(seq_tokens[2 * i]),
               double(seq_tokens[2 * i + 1]), ref ? ref[2 * i] : 0.0,       ref ? ref[2 * i + 1] : 0.0};
    if (seq_prompt_logp) {
      r.logps.prompt_chosen = seq_prompt_logp[2 * i];
      r.logps.prompt_tokens_chosen = seq_prompt_tokens[2 * i];
    }
    r.entropy_chosen = seq_entropy[2 * i];
    r.entropy_rejected = seq_entropy[2 * i + 1];
    r.loss = to_double(losses[i]);
    out.push_back(r);
  }
}

template void append_pair_results<double>(std::vector<PairResult>&, int, const int64_t*, const float*, const double*,
                                          const double*, const double*, const PairLoss<double>*, const double*,
                                          const double*);
template void append_pair_results<float>(std::vector<PairResult>&, int, const int64_t*, const float*, const float*,
                                         const float*, const float*, const PairLoss<float>*, const float*,
                                         const float*);

}  // namespace stapo
