// The dataloader: a Shard → PairBatch (model/batch.h) for one rank, epoch after epoch.
//
// Order. Each epoch e has one global order of all pairs, the same on every rank: a Fisher-Yates shuffle
// seeded by (seed, e) with mt19937_64 (identical on every platform), optionally length-grouped (the order is
// cut into groups of `length_group_pairs` consecutive pairs, each sorted longest first, so a batch holds
// pairs of similar length and padding shrinks). A global step takes the next B × world_size pairs of that
// order and rank r takes the r-th contiguous share, so every pair is seen exactly once per epoch across
// ranks. The last step of an epoch may be short: shares then differ by at most one pair and may be empty.
//
// Layout. Sequence 2i = prompt + chosen of the rank's i-th pair, 2i+1 = prompt + rejected. Padding: one
// sequence per row, rows right-padded to the longest sequence rounded up to `pad_multiple` (≤ row_length).
// Packing: sequences placed first-fit, in order, into rows of row_length; positions restart at 0 and each
// sequence of a row has its own segment, so attention never crosses sequences.
//
// Position. (epoch, index): index = pairs of the epoch's global order already consumed. The order does
// not depend on the world size, so a run resumes exactly from a saved position, even on another world size.
#pragma once
#include <cstdint>
#include <vector>

#include "data/shard.h"
#include "model/batch.h"  // defines: PairBatch, TokenBatch

namespace stapo {

struct PairLoaderConfig {
  int pairs_per_batch = 8;  // B pairs per rank per step → 2B sequences
  int row_length = 1024;    // T; every sequence must fit (prepare_data --max-length ≤ T)
  bool pack = false;
  int pad_multiple = 8;  // padding mode: T rounded up to this
  int rank = 0, world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t length_group_pairs = 0;  // 0 = off; best a multiple of B × world_size
};

struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const DataPosition& o) const { return epoch == o.epoch && index == o.index; }
};

class PairLoader {
 public:
  // Keeps a reference to shard; a pair longer than the row length is an error here, naming it.
  PairLoader(const Shard& shard, const PairLoaderConfig& config);

  // Fills the next batch of this rank and advances; at the end of an epoch continues with the next one.
  void next(PairBatch& batch);
  const Shard& shard() const { return shard_; }
  const PairLoaderConfig& config() const { return config_; }
  DataPosition position() const { return position_; }
  void seek(const DataPosition& position);  // exact resume
  int64_t steps_per_epoch() const;
  // The global order of epoch `epoch` (pair indices into the shard).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  const Shard& shard_;
  PairLoaderConfig config_;
  DataPosition position_;
  std::vector<int64_t> order_;  // of position_.epoch
  int64_t order_epoch_ = -1;
};

// The rows of a batch for the given pairs (exposed so tests can build padded and packed layouts alike).
void pair_batch_fill(PairBatch& batch, const Shard& shard, const std::vector<int64_t>& pair_indices,
                     const PairLoaderConfig& config);

}  // namespace stapo
