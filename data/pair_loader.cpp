#include "data/pair_loader.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>

#include "common/error.h"

namespace stapo {

namespace {

// Uniform integer in [0, n) by rejection: std::uniform_int_distribution differs between standard libraries,
// and shuffles must be the same everywhere for a seed.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

struct SequenceRef {
  const int32_t* prompt;
  const int32_t* response;
  int32_t prompt_length, response_length;
  int32_t length() const { return prompt_length + response_length; }
};

// Writes one sequence at (row, offset): targets are the next token inside the sequence; a position whose
// target is a response token belongs to response `sequence`, one whose target is a prompt token to its prompt.
void write_sequence(PairBatch& batch, int row, int offset, int segment, int sequence, const SequenceRef& s) {
  TokenBatch& tb = batch.tokens;
  int n = s.length();
  auto token_at = [&](int j) { return j < s.prompt_length ? s.prompt[j] : s.response[j - s.prompt_length]; };
  for (int j = 0; j < n; ++j) {
    size_t k = static_cast<size_t>(row) * tb.T + offset + j;
    tb.tokens[k] = token_at(j);
    tb.targets[k] = j + 1 < n ? token_at(j + 1) : -1;
    tb.positions[k] = j;
    tb.segments[k] = segment;
    batch.response_sequence[k] = (j + 1 >= s.prompt_length && j + 1 < n) ? sequence : -1;
    batch.prompt_sequence[k] = j + 1 < s.prompt_length ? sequence : -1;
  }
}

int round_up(int n, int multiple) { return (n + multiple - 1) / multiple * multiple; }

void check_fits(const Shard& shard, int64_t pair_index, int length, int row_length) {
  STAPO_CHECK(length <= row_length, shard.path(), ": pair ", pair_index, " has a ", length,
              "-token sequence, longer than the row length ", row_length,
              "; raise the row length or re-run prepare_data with --max-length ", row_length);
}

}  // namespace

void pair_batch_fill(PairBatch& batch, const Shard& shard, const std::vector<int64_t>& pair_indices,
                     const PairLoaderConfig& config) {
  std::vector<SequenceRef> sequences;
  sequences.reserve(pair_indices.size() * 2);
  batch.num_pairs = static_cast<int>(pair_indices.size());
  batch.pair_ids = pair_indices;
  batch.response_length.clear();
  batch.reference_logps.clear();
  for (int64_t index : pair_indices) {
    PairView p = shard.pair(index);
    sequences.push_back({p.prompt, p.chosen, p.prompt_length, p.chosen_length});
    sequences.push_back({p.prompt, p.rejected, p.prompt_length, p.rejected_length});
    batch.response_length.push_back(p.chosen_length);
    batch.response_length.push_back(p.rejected_length);
    if (shard.has_reference()) {
      batch.reference_logps.push_back(shard.reference_logps()[2 * index]);
      batch.reference_logps.push_back(shard.reference_logps()[2 * index + 1]);
    }
  }
  int longest = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    check_fits(shard, pair_indices[s / 2], sequences[s].length(), config.row_length);
    longest = std::max(longest, sequences[s].length());
  }

  // Placement: (row, offset, segment) of each sequence.
  struct Place {
    int row, offset, segment;
  };
  std::vector<Place> places(sequences.size());
  TokenBatch& tb = batch.tokens;
  if (config.pack) {
    std::vector<int> used, segments_in_row;
    for (size_t s = 0; s < sequences.size(); ++s) {
      int n = sequences[s].length();
      size_t row = 0;
      while (row < used.size() && used[row] + n > config.row_length) ++row;
      if (row == used.size()) {
        used.push_back(0);
        segments_in_row.push_back(0);
      }
      places[s] = {static_cast<int>(row), used[row], segments_in_row[row]++};
      used[row] += n;
    }
    tb.rows = static_cast<int>(used.size());
    tb.T = config.row_length;
  } else {
    for (size_t s = 0; s < sequences.size(); ++s) places[s] = {static_cast<int>(s), 0, 0};
    tb.rows = static_cast<int>(sequences.size());
    tb.T = std::min(config.row_length, round_up(std::max(longest, 1), config.pad_multiple));
  }

  size_t cells = static_cast<size_t>(tb.rows) * tb.T;
  tb.tokens.assign(cells, 0);
  tb.targets.assign(cells, -1);
  tb.positions.assign(cells, 0);
  tb.segments.assign(cells, -1);
  batch.response_sequence.assign(cells, -1);
  batch.prompt_sequence.assign(cells, -1);
  for (size_t s = 0; s < sequences.size(); ++s)
    write_sequence(batch, places[s].row, places[s].offset, places[s].segment, static_cast<int>(s), sequences[s]);
}

PairLoader::PairLoader(const Shard& shard, const PairLoaderConfig& config) : shard_(shard), config_(config) {
  STAPO_CHECK(config.pairs_per_batch >= 1, "pairs per batch must be >= 1, got ", config.pairs_per_batch);
  STAPO_CHECK(config.row_length >= 2, "row length must be >= 2, got ", config.row_length);
  STAPO_CHECK(config.pad_multiple >= 1, "pad multiple must be >= 1, got ", config.pad_multiple);
  STAPO_CHECK(config.world_size >= 1 && config.rank >= 0 && config.rank < config.world_size, "rank ", config.rank,
              " is not in [0, world size ", config.world_size, ")");
  STAPO_CHECK(config.length_group_pairs >= 0, "length group must be >= 0 pairs, got ", config.length_group_pairs);
  STAPO_CHECK(shard.num_pairs() > 0, shard.path(), " holds no pairs");
  for (int64_t i = 0; i < shard.num_pairs(); ++i) {  // at start, not hours into an epoch
    PairView p = shard.pair(i);
    check_fits(shard, i, p.prompt_length + std::max(p.chosen_length, p.rejected_length), config.row_length);
  }
}

std::vector<int64_t> PairLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(shard_.num_pairs()));
  std::iota(order.begin(), order.end(), 0);
  if (config_.shuffle) {
    std::seed_seq seq{static_cast<uint32_t>(config_.seed), static_cast<uint32_t>(config_.seed >> 32),
                      static_cast<uint32_t>(epoch), static_cast<uint32_t>(static_cast<uint64_t>(epoch) >> 32)};
    std::mt19937_64 rng(seq);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[uniform_below(rng, i)]);
  }
  if (config_.length_group_pairs > 0) {
    auto pair_length = [&](int64_t index) {
      PairView p = shard_.pair(index);
      return p.prompt_length + std::max(p.chosen_length, p.rejected_length);
    };
    for (size_t start = 0; start < order.size(); start += static_cast<size_t>(config_.length_group_pairs)) {
      auto first = order.begin() + static_cast<std::ptrdiff_t>(start);
      auto last = order.begin() + static_cast<std::ptrdiff_t>(
                                      std::min(order.size(), start + static_cast<size_t>(config_.length_group_pairs)));
      std::stable_sort(first, last, [&](int64_t a, int64_t b) { return pair_length(a) > pair_length(b); });
    }
  }
  return order;
}

int64_t PairLoader::steps_per_epoch() const {
  int64_t per_step = static_cast<int64_t>(config_.pairs_per_batch) * config_.world_size;
  return (shard_.num_pairs() + per_step - 1) / per_step;
}

void PairLoader::seek(const DataPosition& position) {
  STAPO_CHECK(position.epoch >= 0 && position.index >= 0 && position.index <= shard_.num_pairs(),
              "data position (epoch ", position.epoch, ", index ", position.index, ") is outside ", shard_.path(),
              " with ", shard_.num_pairs(), " pairs; was the checkpoint made with another shard?");
  position_ = position;
}

void PairLoader::next(PairBatch& batch) {
  if (position_.index >= shard_.num_pairs()) position_ = {position_.epoch + 1, 0};
  if (order_epoch_ != position_.epoch) {
    order_ = epoch_order(position_.epoch);
    order_epoch_ = position_.epoch;
  }
  int64_t per_step = static_cast<int64_t>(config_.pairs_per_batch) * config_.world_size;
  int64_t step_pairs = std::min(per_step, shard_.num_pairs() - position_.index);
  int64_t begin = position_.index + step_pairs * config_.rank / config_.world_size;
  int64_t end = position_.index + step_pairs * (config_.rank + 1) / config_.world_size;
  std::vector<int64_t> mine(order_.begin() + begin, order_.begin() + end);
  pair_batch_fill(batch, shard_, mine, config_);
  position_.index += step_pairs;
}

}  // namespace stapo
