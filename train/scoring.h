// Scoring a shard with an engine: per pair S_w, S_l, |y_w|, |y_l|, entropy sums and the loss's z, in shard order.
// The engine of ./score and of the reference pass (--ref precompute), which stores S_ref of the initial
// weights in the shard's reference section, tagged with a hash of the model files that produced it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/pair_loader.h"  // defines: PairLoaderConfig
#include "data/shard.h"        // defines: Shard
#include "train/engine.h"      // defines: Engine

namespace stapo {

// Every pair of the shard, in shard order (the loader's shuffle is turned off), as the engine computes it under
// `loss` (z, Δ, rewards; the shard's reference log-probs when it has them).
std::vector<PairResult> score_shard(Engine& engine, const Shard& shard, PairLoaderConfig loader_config,
                                    const LossConfig& loss, const std::string& progress_label);

// "model <dir-name> fnv1a64 <hash of config.json and every *.safetensors>": what a reference pass is keyed by.
std::string reference_tag(const std::string& model_dir);

// Runs the pass when the shard has no reference or one from another model (returns true), else reuses it.
// The shard must have been tokenized by the tokenizer shipped in the model directory (tokenizer.json or
// tokenizer.model): otherwise its ids mean other words to the model. A directory without tokenizer files
// cannot be checked; that is said on stderr, not silently passed. The shard's ids must also lie inside the
// model's vocab_size (config.json).
void check_shard_tokenizer(const Shard& shard, const std::string& model_dir);

// A shard whose reference log-probs were written by another model than `model_dir` (another reference_tag) is
// refused: a preference loss against another model's S_ref trains toward the wrong target without a word.
void check_shard_reference(const Shard& shard, const std::string& model_dir);

bool reference_ensure(Engine& engine, const std::string& shard_path, const PairLoaderConfig& loader_config,
                      const std::string& tag);

}  // namespace stapo
