// score: per pair S_w, S_l, |y_w|, |y_l|, mean entropy of each response, Δ and z under a model, as JSONL —
// the audit tool for a checkpoint (and, through train/scoring.h, the engine of the reference pass).
#include <omp.h>

#include <nlohmann/json.hpp>

#include "common/cli.h"        // defines: STAPO_PARSE_CLI, run_main
#include "common/file_io.h"    // defines: write_file_atomic
#include "train/cpu_engine.h"  // defines: CpuEngine
#include "train/loss_flags.h"  // defines: LossFlags, loss_flags_add, loss_flags_config
#include "train/scoring.h"     // defines: score_shard, check_shard_tokenizer, check_shard_reference

int main(int argc, char** argv) {
  CLI::App app{"score: per-pair sequence log-probs, lengths, entropies and z of a shard under a model (JSONL)"};
  app.name("score");
  std::string model_dir, data_path, out_path;
  stapo::LossFlags loss_flags;
  stapo::PairLoaderConfig lc;
  int threads = 0;
  app.add_option("--model", model_dir, "HF checkpoint directory")->required();
  app.add_option("--data", data_path, "shard written by ./prepare_data")->required();
  app.add_option("--out", out_path, "output JSONL, one line per pair in shard order")->required();
  stapo::loss_flags_add(app, loss_flags);
  app.add_option("--batch-size", lc.pairs_per_batch, "pairs per forward")->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-length", lc.row_length, "row length T (every sequence must fit)")->check(CLI::Range(1, 1 << 24));
  stapo::cli_add_threads(app, threads, "OpenMP threads (0: default)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    stapo::output_check("--out", out_path, {data_path, model_dir + "/config.json"});
    stapo::LossConfig config = stapo::loss_flags_config(app, loss_flags);
    stapo::Shard shard(data_path);
    stapo::check_shard_tokenizer(shard, model_dir);
    stapo::loss_config_validate(config, shard.has_reference());
    if (stapo::reward_uses_reference(config.reward)) stapo::check_shard_reference(shard, model_dir);
    stapo::CpuEngine<float> engine(stapo::model_load_hf<float>(model_dir));
    const std::vector<stapo::PairResult> scores = stapo::score_shard(engine, shard, lc, config, "score");
    std::string text;
    for (const stapo::PairResult& s : scores) {
      nlohmann::ordered_json j;
      j["pair"] = s.pair_id;
      j["id"] = std::string(shard.pair(s.pair_id).id);
      j["logp_chosen"] = s.logps.logp_chosen;
      j["logp_rejected"] = s.logps.logp_rejected;
      j["len_chosen"] = int64_t(s.logps.len_chosen);
      j["len_rejected"] = int64_t(s.logps.len_rejected);
      j["entropy_chosen"] = s.entropy_chosen / s.logps.len_chosen;
      j["entropy_rejected"] = s.entropy_rejected / s.logps.len_rejected;
      j["delta"] = s.loss.delta;
      j["z"] = s.loss.z;
      text += j.dump() + "\n";
    }
    stapo::write_file_atomic(out_path, text);
    fprintf(stderr, "wrote %zu pairs to %s (%s)\n", scores.size(), out_path.c_str(),
            stapo::loss_config_summary(config).c_str());
  });
}
