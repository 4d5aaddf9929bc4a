// The batch checks (model/batch.h): the kernels and the CPU model index with these values unchecked, so a bad
// batch is an error naming the row, position or pair, never a wild read.
#include "model/batch.h"

#include "common/error.h"

namespace stapo {

void token_batch_validate(const TokenBatch& b, int vocab_size) {
  STAPO_CHECK(b.rows > 0 && b.T > 0, "TokenBatch: rows (", b.rows, ") and T (", b.T, ") must be positive");
  const size_t n = (size_t)b.rows * b.T;
  STAPO_CHECK(n <= (size_t)INT32_MAX, "TokenBatch: rows·T = ", n, " tokens is too many for one batch");
  STAPO_CHECK(b.tokens.size() == n && b.targets.size() == n && b.positions.size() == n && b.segments.size() == n,
              "TokenBatch: tokens, targets, positions and segments must each hold rows·T = ", n, " entries");
  for (size_t i = 0; i < n; ++i) {
    const auto where = [&] { return cat(" at row ", i / b.T, " position ", i % b.T); };
    STAPO_CHECK(b.tokens[i] >= 0 && b.tokens[i] < vocab_size, "TokenBatch: token ", b.tokens[i], where(),
                " is outside the vocabulary (", vocab_size, ")");
    STAPO_CHECK(b.targets[i] >= -1 && b.targets[i] < vocab_size, "TokenBatch: target ", b.targets[i], where(),
                " is outside the vocabulary (", vocab_size, ") and not -1");
    STAPO_CHECK(b.positions[i] >= 0, "TokenBatch: negative position id", where());
    STAPO_CHECK(b.segments[i] >= -1, "TokenBatch: segment ", b.segments[i], where(), " is below -1");
  }
}

void pair_batch_validate(const PairBatch& b, int vocab_size) {
  token_batch_validate(b.tokens, vocab_size);
  const TokenBatch& t = b.tokens;
  const size_t n = (size_t)t.rows * t.T;
  const int sequences = 2 * b.num_pairs;
  STAPO_CHECK(b.num_pairs > 0, "PairBatch: no pairs");
  STAPO_CHECK(b.response_sequence.size() == n, "PairBatch: response_sequence has ", b.response_sequence.size(),
              " entries, expected rows·T = ", n);
  STAPO_CHECK(b.pair_ids.size() == size_t(b.num_pairs) && b.response_length.size() == size_t(sequences),
              "PairBatch: ", b.pair_ids.size(), " pair ids and ", b.response_length.size(), " response lengths for ",
              b.num_pairs, " pairs");
  STAPO_CHECK(b.reference_logps.empty() || b.reference_logps.size() == size_t(sequences), "PairBatch: ",
              b.reference_logps.size(), " reference log-probs for ", sequences, " sequences");
  const bool prompt = !b.prompt_sequence.empty();
  STAPO_CHECK(!prompt || b.prompt_sequence.size() == n, "PairBatch: prompt_sequence has ", b.prompt_sequence.size(),
              " entries, expected rows·T = ", n, " (or none)");
  std::vector<int32_t> counted(sequences, 0);
  for (size_t i = 0; i < n; ++i) {
    if (prompt) {
      const int p = b.prompt_sequence[i];
      STAPO_CHECK(p >= -1 && p < sequences && (p < 0 || (t.targets[i] >= 0 && b.response_sequence[i] < 0)),
                  "PairBatch: prompt_sequence ", p, " at row ", i / t.T, " position ", i % t.T,
                  " is out of range, has no target or marks a response position");
    }
    const int s = b.response_sequence[i];
    STAPO_CHECK(s >= -1 && s < sequences, "PairBatch: response_sequence ", s, " at row ", i / t.T, " position ",
                i % t.T, " but the batch has ", sequences, " sequences");
    STAPO_CHECK(s < 0 || t.targets[i] >= 0, "PairBatch: response token at row ", i / t.T, " position ", i % t.T,
                " of sequence ", s, " has no target");
    if (s >= 0) counted[s]++;
  }
  for (int s = 0; s < sequences; ++s)
    STAPO_CHECK(counted[s] > 0 && counted[s] == b.response_length[s], "pair ", b.pair_ids[s / 2], ": its ",
                s % 2 ? "rejected" : "chosen", " response has ", counted[s], " target positions in the batch but length ",
                b.response_length[s], (counted[s] == 0 ? " (an empty response)" : ""),
                ": rebuild the shard with prepare_data");
}

LogpRows logp_rows(const PairBatch& b, bool chosen_prompts) {
  STAPO_CHECK(!chosen_prompts || !b.prompt_sequence.empty(), "logp_rows: an NLL over prompt + response needs the "
              "batch's prompt_sequence (the dataloader fills it; batches built by hand must too)");
  LogpRows out;
  for (size_t i = 0; i < b.response_sequence.size(); ++i) {
    const int32_t s = b.response_sequence[i], p = chosen_prompts ? b.prompt_sequence[i] : -1;
    const bool prompt = p >= 0 && p % 2 == 0;
    if (s < 0 && !prompt) continue;
    out.index.push_back((int32_t)i);
    out.targets.push_back(b.tokens.targets[i]);
    out.response_sequence.push_back(s);
    if (chosen_prompts) out.prompt_sequence.push_back(prompt ? p : -1);
  }
  return out;
}

}  // namespace stapo
