// Shared by the data tests: random tokenized pairs and a scratch directory for shards and JSONL files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace stapo::test {

// `count` pairs with random lengths (prompt 1..max_prompt, responses 1..max_response) and random ids in
// [1, vocab); seeded by the test's name and `salt`.
std::vector<TokenizedPair> random_pairs(int count, int max_prompt, int max_response, int32_t vocab, uint64_t salt = 0);

ShardInfo test_shard_info(int32_t vocab);

// A path in a scratch directory of the running test (removed when the test binary ends).
std::string scratch_path(const std::string& name);

// Writes `text` to scratch_path(name) and returns the path.
std::string write_scratch(const std::string& name, const std::string& text);

}  // namespace stapo::test
