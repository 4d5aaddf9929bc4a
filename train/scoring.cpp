// Scoring and the reference pass (train/scoring.h).
#include "train/scoring.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "model/config.h"        // defines: config_load
#include "tokenizer/tokenizer.h"  // defines: Tokenizer
#include "train/trainer.h"         // defines: run_micro_batches, count_tokens

namespace stapo {

std::vector<PairResult> score_shard(Engine& engine, const Shard& shard, PairLoaderConfig loader_config,
                                    const LossConfig& loss, const std::string& progress_label) {
  loader_config.shuffle = false;
  loader_config.length_group_pairs = 0;
  PairLoader loader(shard, loader_config);
  const int64_t steps = loader.steps_per_epoch();
  std::vector<PairResult> scores;
  scores.reserve(size_t(shard.num_pairs()));
  std::vector<PairBatch> one(1);
  Progress progress(progress_label, steps);
  for (int64_t s = 0; s < steps; s++) {
    loader.next(one[0]);
    run_micro_batches(engine, one, loss, false);
    for (PairResult& r : engine.take_results().pairs) scores.push_back(r);
    progress.update(s + 1, count_tokens(one));
  }
  progress.finish();
  STAPO_CHECK(int64_t(scores.size()) == shard.num_pairs(), shard.path(), ": scored ", scores.size(), " of ",
              shard.num_pairs(), " pairs");
  return scores;
}

std::string reference_tag(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files = {model_dir + "/config.json"};
  for (const auto& entry : fs::directory_iterator(model_dir))
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  std::sort(files.begin() + 1, files.end());
  uint64_t hash = 1469598103934665603ull;  // FNV-1a 64
  for (const std::string& path : files) {
    MappedFile f(path);
    for (size_t i = 0; i < f.size(); i++) hash = (hash ^ f.data()[i]) * 1099511628211ull;
  }
  char hex[17];
  snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return cat("model ", fs::path(model_dir).filename().string(), " fnv1a64 ", hex);
}

bool reference_ensure(Engine& engine, const std::string& shard_path, const PairLoaderConfig& loader_config,
                      const std::string& tag) {
  std::vector<float> logps;
  {
    Shard shard(shard_path, ReferenceCheck::skip);  // a damaged reference is recomputed, not an error
    if (shard.has_reference() && shard.reference_tag() == tag && shard.reference_intact()) return false;
    if (shard.has_reference() && !shard.reference_intact())
      fprintf(stderr, "%s: the stored reference log-probs fail their checksum: recomputing\n", shard_path.c_str());
    else if (shard.has_reference())
      fprintf(stderr, "%s: reference log-probs are from '%s', not '%s': recomputing\n", shard_path.c_str(),
              shard.reference_tag().c_str(), tag.c_str());
    // Only S is needed: any loss whose reward needs no reference will do.
    const std::vector<PairResult> scores =
        score_shard(engine, shard, loader_config, loss_defaults(LossKind::sft), "reference pass");
    logps.assign(size_t(2 * shard.num_pairs()), 0.0f);
    for (const PairResult& s : scores) {
      logps[2 * s.pair_id] = float(s.logps.logp_chosen);
      logps[2 * s.pair_id + 1] = float(s.logps.logp_rejected);
    }
  }
  shard_write_reference_logps(shard_path, 0, logps);
  shard_mark_reference_complete(shard_path, tag);
  return true;
}

void check_shard_reference(const Shard& shard, const std::string& model_dir) {
  if (!shard.has_reference()) return;
  const std::string tag = reference_tag(model_dir);
  STAPO_CHECK(shard.reference_tag() == tag, shard.path(), ": its reference log-probs were computed by another model ('",
              shard.reference_tag(), "'), not by ", model_dir, " ('", tag, "'); a loss against them would train ",
              "toward the wrong target. Run the reference pass for this model (--ref precompute replaces them)");
}

void check_shard_tokenizer(const Shard& shard, const std::string& model_dir) {
  const int model_vocab = config_load(model_dir + "/config.json").vocab_size;
  STAPO_CHECK(shard.info().vocab_size <= model_vocab, shard.path(), " holds ids of a ", shard.info().vocab_size,
              "-token vocabulary, but ", model_dir, "/config.json has vocab_size ", model_vocab,
              ": the shard was made for another model");
  if (!file_exists(model_dir + "/tokenizer.json") && !file_exists(model_dir + "/tokenizer.model")) {
    fprintf(stderr, "warning: %s has no tokenizer files: cannot check that %s was tokenized for this model\n",
            model_dir.c_str(), shard.path().c_str());
    return;
  }
  shard.check_tokenizer(Tokenizer::load(model_dir)->content_hash());
}

}  // namespace stapo
