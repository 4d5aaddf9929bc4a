// The dataloader (data/pair_loader.h): batch semantics against model/batch.h's contract, padding vs packing,
// seeded shuffles, exactly-once coverage across ranks, exact resume, length grouping.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "common/error.h"
#include "data/pair_loader.h"
#include "model/batch.h"  // defines: logp_rows
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

namespace stapo {
namespace {

using test::random_pairs;
using test::scratch_path;
using test::test_shard_info;

std::string make_shard(const std::string& name, int count, int max_prompt = 30, int max_response = 25) {
  std::string path = scratch_path(name);
  shard_write(path, test_shard_info(1000), random_pairs(count, max_prompt, max_response, 1000));
  return path;
}

PairLoaderConfig loader_config(int pairs_per_batch, int row_length, uint64_t seed) {
  PairLoaderConfig config;
  config.pairs_per_batch = pairs_per_batch;
  config.row_length = row_length;
  config.seed = seed;
  return config;
}

// What one sequence looks like in a batch, recovered from its cells (row-major walk of its segment).
struct SequenceCells {
  std::vector<int32_t> tokens, targets, positions, response_sequence, prompt_sequence;
};

std::map<int, SequenceCells> sequences_of(const PairBatch& b) {
  const TokenBatch& t = b.tokens;
  std::map<int, SequenceCells> out;
  for (int r = 0; r < t.rows; ++r) {
    std::map<int, int> sequence_of_segment;  // a segment's sequence = the sequence its response cells name
    for (int p = 0; p < t.T; ++p) {
      size_t k = static_cast<size_t>(r) * t.T + p;
      if (t.segments[k] >= 0 && b.response_sequence[k] >= 0) sequence_of_segment[t.segments[k]] = b.response_sequence[k];
    }
    for (int p = 0; p < t.T; ++p) {
      size_t k = static_cast<size_t>(r) * t.T + p;
      if (t.segments[k] < 0) continue;
      SequenceCells& s = out[sequence_of_segment.at(t.segments[k])];
      s.tokens.push_back(t.tokens[k]);
      s.targets.push_back(t.targets[k]);
      s.positions.push_back(t.positions[k]);
      s.response_sequence.push_back(b.response_sequence[k]);
      s.prompt_sequence.push_back(b.prompt_sequence[k]);
    }
  }
  return out;
}

// Checks a batch cell by cell against the shard: sequence 2i = prompt + chosen of pair i, 2i+1 = prompt +
// rejected; targets are next tokens; exactly the positions whose target is a response token name the sequence
// in response_sequence, those whose target is a prompt token (the 2nd on) in prompt_sequence.
void expect_batch_matches_shard(const PairBatch& b, const Shard& shard) {
  ASSERT_EQ(static_cast<int>(b.pair_ids.size()), b.num_pairs);
  ASSERT_EQ(static_cast<int>(b.response_length.size()), 2 * b.num_pairs);
  auto seqs = sequences_of(b);
  ASSERT_EQ(static_cast<int>(seqs.size()), 2 * b.num_pairs);
  for (int s = 0; s < 2 * b.num_pairs; ++s) {
    PairView p = shard.pair(b.pair_ids[static_cast<size_t>(s / 2)]);
    std::vector<int32_t> want(p.prompt, p.prompt + p.prompt_length);
    const int32_t* response = s % 2 == 0 ? p.chosen : p.rejected;
    int32_t response_length = s % 2 == 0 ? p.chosen_length : p.rejected_length;
    want.insert(want.end(), response, response + response_length);
    const SequenceCells& got = seqs.at(s);
    ASSERT_EQ(got.tokens, want) << "sequence " << s;
    EXPECT_EQ(b.response_length[static_cast<size_t>(s)], response_length);
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ(got.positions[j], static_cast<int32_t>(j));
      EXPECT_EQ(got.targets[j], j + 1 < want.size() ? want[j + 1] : -1);
      bool target_is_response = j + 1 >= static_cast<size_t>(p.prompt_length) && j + 1 < want.size();
      EXPECT_EQ(got.response_sequence[j], target_is_response ? s : -1) << "sequence " << s << " position " << j;
      bool target_is_prompt = j + 1 < static_cast<size_t>(p.prompt_length);
      EXPECT_EQ(got.prompt_sequence[j], target_is_prompt ? s : -1) << "sequence " << s << " position " << j;
    }
  }
  // Padding cells carry no target, no response and token 0.
  const TokenBatch& t = b.tokens;
  for (size_t k = 0; k < t.tokens.size(); ++k)
    if (t.segments[k] < 0) {
      EXPECT_EQ(t.tokens[k], 0);
      EXPECT_EQ(t.targets[k], -1);
      EXPECT_EQ(b.response_sequence[k], -1);
      EXPECT_EQ(b.prompt_sequence[k], -1);
    }
}

TEST(PairLoader, PaddedBatchFollowsTheBatchContract) {
  std::string path = make_shard("s.bin", 19);
  Shard shard(path);
  PairLoaderConfig config = loader_config(4, 64, 7);
  PairLoader loader(shard, config);
  PairBatch b;
  for (int step = 0; step < 5; ++step) {
    loader.next(b);
    expect_batch_matches_shard(b, shard);
    EXPECT_EQ(b.tokens.rows, 2 * b.num_pairs);
    size_t longest = 0;
    for (const auto& [s, cells] : sequences_of(b)) longest = std::max(longest, cells.tokens.size());
    EXPECT_EQ(b.tokens.T % 8, 0);
    EXPECT_LE(b.tokens.T, 64);
    EXPECT_GE(b.tokens.T, static_cast<int>(longest));
    EXPECT_LT(b.tokens.T, static_cast<int>(longest) + 8) << "rows are padded to the longest sequence only";
    EXPECT_TRUE(b.reference_logps.empty());
  }
}

TEST(PairLoader, PackingGivesTheSameSequencesAndMasksAsPadding) {
  std::string path = make_shard("s.bin", 40);
  Shard shard(path);
  PairLoaderConfig config = loader_config(8, 128, 3);
  PairLoaderConfig packed_config = config;
  packed_config.pack = true;
  PairLoader padded(shard, config), packed(shard, packed_config);
  PairBatch a, b;
  int64_t rows_padded = 0, rows_packed = 0;
  for (int step = 0; step < 5; ++step) {
    padded.next(a);
    packed.next(b);
    ASSERT_EQ(a.pair_ids, b.pair_ids);
    expect_batch_matches_shard(b, shard);
    auto sa = sequences_of(a), sb = sequences_of(b);
    ASSERT_EQ(sa.size(), sb.size());
    for (auto& [s, cells] : sa) {
      EXPECT_EQ(cells.tokens, sb[s].tokens);
      EXPECT_EQ(cells.targets, sb[s].targets);
      EXPECT_EQ(cells.positions, sb[s].positions);
      EXPECT_EQ(cells.response_sequence, sb[s].response_sequence);
    }
    EXPECT_EQ(a.response_length, b.response_length);
    EXPECT_EQ(b.tokens.T, 128);
    // Within a packed row, segments are 0, 1, 2, ... in order, each starting at position 0.
    for (int r = 0; r < b.tokens.rows; ++r) {
      int previous = -1;
      for (int p = 0; p < b.tokens.T; ++p) {
        size_t k = static_cast<size_t>(r) * b.tokens.T + p;
        int segment = b.tokens.segments[k];
        if (segment < 0) continue;
        if (segment != previous) {
          ASSERT_EQ(segment, previous + 1) << "row " << r << " position " << p;
          EXPECT_EQ(b.tokens.positions[k], 0);
          previous = segment;
        } else {
          EXPECT_GT(b.tokens.positions[k], 0);
        }
      }
    }
    rows_padded += a.tokens.rows;
    rows_packed += b.tokens.rows;
  }
  EXPECT_LT(rows_packed * 2, rows_padded) << "packing should put several ~50-token sequences in a 128-token row";
}

TEST(PairLoader, ShuffleIsDeterministicForASeedAndDiffersAcrossSeedsAndEpochs) {
  std::string path = make_shard("s.bin", 50);
  Shard shard(path);
  PairLoaderConfig config;
  config.seed = 1234;
  PairLoader a(shard, config), b(shard, config);
  config.seed = 1235;
  PairLoader c(shard, config);
  auto order = a.epoch_order(0);
  EXPECT_EQ(order, b.epoch_order(0));
  EXPECT_NE(order, c.epoch_order(0));
  EXPECT_NE(order, a.epoch_order(1));
  std::vector<int64_t> sorted = order, identity(50);
  std::sort(sorted.begin(), sorted.end());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(order, identity);
  config.shuffle = false;
  EXPECT_EQ(PairLoader(shard, config).epoch_order(3), identity);
}

// Every pair exactly once per epoch across all ranks, every rank taking the same number of steps.
void expect_exactly_once(const Shard& shard, PairLoaderConfig config, int world_size) {
  config.world_size = world_size;
  std::vector<int64_t> all_epochs_seen;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int> seen(static_cast<size_t>(shard.num_pairs()), 0);
    for (int rank = 0; rank < world_size; ++rank) {
      config.rank = rank;
      PairLoader loader(shard, config);
      loader.seek({epoch, 0});
      PairBatch b;
      for (int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
        loader.next(b);
        EXPECT_LE(b.num_pairs, config.pairs_per_batch);
        for (int64_t id : b.pair_ids) ++seen[static_cast<size_t>(id)];
      }
      EXPECT_EQ(loader.position(), (DataPosition{epoch, shard.num_pairs()}));
    }
    for (size_t i = 0; i < seen.size(); ++i)
      EXPECT_EQ(seen[i], 1) << "pair " << i << " in epoch " << epoch << " with " << world_size << " ranks";
  }
}

TEST(PairLoader, EveryPairExactlyOncePerEpochAcross1_2_3Ranks) {
  std::string path = make_shard("s.bin", 23);  // 23 = no multiple of B × world size below
  Shard shard(path);
  PairLoaderConfig config = loader_config(2, 64, 99);
  for (int world : {1, 2, 3}) expect_exactly_once(shard, config, world);
  config.length_group_pairs = 6;
  config.pack = true;
  for (int world : {1, 2, 3}) expect_exactly_once(shard, config, world);
}

TEST(PairLoader, ResumesExactlyFromASavedPosition) {
  std::string path = make_shard("s.bin", 21);
  Shard shard(path);
  PairLoaderConfig config = loader_config(4, 64, 5);
  config.world_size = 2;
  config.rank = 1;
  PairLoader straight(shard, config);
  PairBatch b;
  std::vector<std::vector<int64_t>> ids;
  std::vector<DataPosition> positions;
  for (int step = 0; step < 9; ++step) {  // 3 steps per epoch: crosses two epoch boundaries
    positions.push_back(straight.position());
    straight.next(b);
    ids.push_back(b.pair_ids);
  }
  for (int from : {1, 3, 4, 7}) {
    PairLoader resumed(shard, config);
    resumed.seek(positions[static_cast<size_t>(from)]);
    for (int step = from; step < 9; ++step) {
      resumed.next(b);
      EXPECT_EQ(b.pair_ids, ids[static_cast<size_t>(step)]) << "resumed at step " << from << ", step " << step;
    }
  }
  PairLoader bad(shard, config);
  EXPECT_THROW(bad.seek({0, 22}), Error);
}

TEST(PairLoader, LengthGroupingCutsPadding) {
  std::string path = make_shard("s.bin", 256, 60, 60);
  Shard shard(path);
  PairLoaderConfig config = loader_config(8, 128, 0);
  config.pad_multiple = 1;
  config.seed = 11;
  auto padded_cells = [&](int64_t group) {
    config.length_group_pairs = group;
    PairLoader loader(shard, config);
    PairBatch b;
    int64_t cells = 0;
    for (int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
      loader.next(b);
      expect_batch_matches_shard(b, shard);
      cells += static_cast<int64_t>(b.tokens.tokens.size());
    }
    return cells;
  };
  int64_t plain = padded_cells(0), grouped = padded_cells(64);
  EXPECT_LT(grouped * 10, plain * 9) << "grouped " << grouped << " cells vs " << plain;
}

TEST(PairLoader, ReferenceLogpsFollowThePairs) {
  std::string path = make_shard("s.bin", 9);
  auto values = test::random_uniform(18, -200.f, -1.f);
  shard_write_reference_logps(path, 0, values);
  shard_mark_reference_complete(path, "init");
  Shard shard(path);
  PairLoaderConfig config = loader_config(3, 64, 0);
  PairLoader loader(shard, config);
  PairBatch b;
  loader.next(b);
  ASSERT_EQ(b.reference_logps.size(), 6u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.reference_logps[2 * i], values[2 * b.pair_ids[i]]);
    EXPECT_EQ(b.reference_logps[2 * i + 1], values[2 * b.pair_ids[i] + 1]);
  }
}

TEST(PairLoader, ASequenceLongerThanTheRowIsAnErrorAtStartNamingThePair) {
  std::string path = make_shard("s.bin", 4, 30, 30);
  Shard shard(path);
  PairLoaderConfig config = loader_config(4, 8, 0);
  std::string msg = test::error_message([&] { PairLoader loader(shard, config); });
  EXPECT_NE(msg.find("s.bin: pair "), std::string::npos) << msg;
  EXPECT_NE(msg.find("-token sequence, longer than the row length 8"), std::string::npos) << msg;
}

// model/batch.h's logp_rows on the loader's batches, padded and packed: without chosen prompts exactly the response
// positions; with them also the |x| − 1 predicted prompt positions of each chosen sequence (its pair's prompt
// length from the shard), none of a rejected one, in position order, each row's target and sequences those of its
// cell. These are the CUDA model's lm_head rows (an NLL over prompt + response: TRL's ORPO).
TEST(PairLoader, LogpRowsAreTheResponsesAndTheChosenPrompts) {
  std::string path = make_shard("s.bin", 24);
  Shard shard(path);
  for (bool pack : {false, true}) {
    PairLoaderConfig config = loader_config(6, 128, 5);
    config.pack = pack;
    PairLoader loader(shard, config);
    PairBatch b;
    for (int step = 0; step < 3; ++step) {
      loader.next(b);
      const std::string what = std::string(pack ? "packed" : "padded") + " step " + std::to_string(step);
      const int sequences = 2 * b.num_pairs;
      for (bool chosen_prompts : {false, true}) {
        const LogpRows rows = logp_rows(b, chosen_prompts);
        const size_t m = rows.index.size();
        ASSERT_EQ(rows.targets.size(), m) << what;
        ASSERT_EQ(rows.response_sequence.size(), m) << what;
        ASSERT_EQ(rows.prompt_sequence.size(), chosen_prompts ? m : 0u) << what;
        std::vector<int32_t> response_rows(sequences, 0), prompt_rows(sequences, 0);
        for (size_t r = 0; r < m; ++r) {
          const int32_t i = rows.index[r];
          if (r > 0) {
            ASSERT_LT(rows.index[r - 1], i) << what << ": rows in position order";
          }
          EXPECT_EQ(rows.targets[r], b.tokens.targets[i]) << what;
          EXPECT_EQ(rows.response_sequence[r], b.response_sequence[i]) << what;
          const int32_t p = chosen_prompts ? rows.prompt_sequence[r] : -1;
          ASSERT_NE(rows.response_sequence[r] >= 0, p >= 0) << what << ": row " << r << " is a response or a prompt";
          if (p >= 0) {
            EXPECT_EQ(p, b.prompt_sequence[i]) << what;
            prompt_rows[p]++;
          } else {
            response_rows[rows.response_sequence[r]]++;
          }
        }
        for (int s = 0; s < sequences; ++s) {
          EXPECT_EQ(response_rows[s], b.response_length[s]) << what << " sequence " << s;
          const int32_t prompt_length = shard.pair(b.pair_ids[s / 2]).prompt_length;
          EXPECT_EQ(prompt_rows[s], chosen_prompts && s % 2 == 0 ? prompt_length - 1 : 0) << what << " sequence " << s;
        }
      }
    }
  }
  // A batch without prompt marks serves the response rows, and refuses the chosen prompts with the reason.
  PairLoader loader(shard, loader_config(2, 128, 5));
  PairBatch b;
  loader.next(b);
  b.prompt_sequence.clear();
  EXPECT_EQ(logp_rows(b, false).index.size(), size_t(b.response_length[0] + b.response_length[1] +
                                                      b.response_length[2] + b.response_length[3]));
  const std::string msg = test::error_message([&] { logp_rows(b, true); });
  EXPECT_NE(msg.find("needs the batch's prompt_sequence"), std::string::npos) << msg;
}

}  // namespace
}  // namespace stapo
