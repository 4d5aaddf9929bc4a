// libFuzzer target for the shard reader (data/shard.h): arbitrary bytes opened as a shard, then, when it is
// accepted, every pair read and one epoch of padded and packed batches built (data/pair_loader.h). Most
// mutations stop at a checksum: the structural checks before it (header, section sizes, pair bounds,
// token ids) are what this reaches. Only a stapo::Error may stop it. Built and run by dev/fuzz/run.sh.
#include <cstddef>
#include <cstdint>

#include "common/error.h"         // defines: Error
#include "data/pair_loader.h"     // defines: PairLoader, pair_batch_fill
#include "data/shard.h"           // defines: Shard
#include "dev/fuzz/fuzz_file.h"   // defines: fuzz_file

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const stapo::Shard shard(fuzz_file(data, size));
    int64_t sum = 0;
    for (int64_t i = 0; i < shard.num_pairs(); ++i) {
      const stapo::PairView p = shard.pair(i);
      for (int32_t t = 0; t < p.prompt_length + p.chosen_length + p.rejected_length; ++t) sum += p.prompt[t];
      sum += static_cast<int64_t>(p.id.size());
    }
    for (bool pack : {false, true}) {
      stapo::PairLoaderConfig config;
      config.pairs_per_batch = 3;
      config.row_length = 4096;
      config.pack = pack;
      stapo::PairLoader loader(shard, config);
      stapo::PairBatch batch;
      for (int64_t s = 0; s < loader.steps_per_epoch(); ++s) loader.next(batch);
    }
    if (sum == 42) return 0;  // keeps the reads from being optimised away
  } catch (const stapo::Error&) {
  }
  return 0;
}
