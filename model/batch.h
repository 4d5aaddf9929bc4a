// What the model consumes: rows of tokens, right-padded or packed, with everything attention and the
// per-token outputs need. Produced by data/ (the dataloader), consumed by model/ (CPU) and the CUDA engine.
#pragma once
#include <cstdint>
#include <vector>

namespace stapo {

// All arrays are (rows, T) row-major; position p of row r is index r*T + p.
struct TokenBatch {
  int rows = 0;
  int T = 0;
  std::vector<int32_t> tokens;     // input ids; padding holds a valid id (0) and is masked out
  std::vector<int32_t> targets;    // id to predict at this position (the next token), -1 = no target
  std::vector<int32_t> positions;  // RoPE position ids, restarting at 0 for every packed sequence
  std::vector<int32_t> segments;   // sequence index within the row, -1 = padding. Query i sees key j iff same
                                   // row, segments[i] == segments[j] >= 0, j <= i (and i - j < window)
};

// A batch of preference pairs: 2B sequences, sequence 2i = prompt + chosen of pair i, 2i+1 = prompt + rejected.
struct PairBatch {
  TokenBatch tokens;
  // (rows, T): the sequence (0..2B-1) whose RESPONSE log-prob this position's target contributes to;
  // -1 for prompt tokens, padding and the last position of a sequence. Only these positions enter S(y).
  std::vector<int32_t> response_sequence;
  // (rows, T) or empty: the sequence whose PROMPT log-prob P this position's target contributes to (the 2nd to
  // last prompt token; the first is never predicted), -1 elsewhere. Read only by an NLL term over prompt +
  // response (TRL's ORPO). Empty in batches built by hand that never need it.
  std::vector<int32_t> prompt_sequence;
  int num_pairs = 0;
  std::vector<int64_t> pair_ids;         // (B) index of each pair in its shard (for error messages, resume)
  std::vector<int32_t> response_length;  // (2B) |y| after truncation
  std::vector<float> reference_logps;    // (2B) Sref(y), empty when the shard has no reference pass yet
};

// Every array the right size, every id and index in range (model/batch.cpp); a stapo::Error otherwise.
void token_batch_validate(const TokenBatch& batch, int vocab_size);
// The token checks, plus: each sequence index below 2B, every response position with a target, and each
// response's target count equal to its response_length (> 0); prompt_sequence, when present, the same size,
// in range, with targets, and never on a response position.
void pair_batch_validate(const PairBatch& batch, int vocab_size);

// The positions whose log-prob a loss reads, in position order (the CUDA model runs its lm_head on these rows
// only): every response position and, with chosen_prompts (an NLL over prompt + response, TRL's ORPO), the
// predicted prompt positions of each CHOSEN sequence (prompt_sequence even; the rejected prompts are never read).
// Per row: its index into the (rows, T) batch, its target, and its sequence in the response_sequence and
// prompt_sequence sense (−1 where the row is not one of those); prompt_sequence is empty without chosen_prompts.
struct LogpRows {
  std::vector<int32_t> index, targets, response_sequence, prompt_sequence;
};
// A stapo::Error when chosen_prompts is asked of a batch without prompt_sequence.
LogpRows logp_rows(const PairBatch& batch, bool chosen_prompts);

}  // namespace stapo
