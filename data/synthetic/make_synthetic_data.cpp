// make_synthetic_data: the demo's data set and tokenizer (data/synthetic/task.h, tokenizer_builder.h).
//   OUT/train.jsonl         preference pairs {"id","prompt","chosen","rejected"} (the pipeline's plain layout)
//   OUT/eval.jsonl          held-out pairs, same layout (eval reward accuracy, z, entropy, log-probs)
//   OUT/eval_prompts.jsonl  the same held-out problems as {"id","prompt","answer"} (task accuracy of generations)
//   OUT/tokenizer.json, OUT/tokenizer_config.json   the tiny byte-level BPE tokenizer, trained on train.jsonl
// Held-out prompts never occur in train.jsonl. The same flags give byte-identical files.
#include <nlohmann/json.hpp>
#include <set>

#include "common/cli.h"
#include "common/file_io.h"
#include "data/synthetic/task.h"               // defines: SyntheticRng, synthetic_pair
#include "data/synthetic/tokenizer_builder.h"  // defines: bpe_train_letter_runs, bpe_tokenizer_json

int main(int argc, char** argv) {
  CLI::App app{"make_synthetic_data: digit-task preference pairs, held-out prompts and a tiny tokenizer for the demo"};
  app.name("make_synthetic_data");
  std::string out_dir;
  int num_pairs = 2000, num_eval = 200, max_merges = 64;
  uint64_t seed = 1;
  double malformed_fraction = 0.25;
  app.add_option("--out", out_dir, "output directory")->required();
  app.add_option("--pairs", num_pairs, "training pairs")->check(CLI::Range(1, 10000000));
  app.add_option("--eval", num_eval, "held-out problems (pairs and prompts)")->check(CLI::Range(0, 1000000));
  app.add_option("--seed", seed, "random seed");
  app.add_option("--malformed-fraction", malformed_fraction,
                 "fraction of rejected answers that are malformed; the rest are well-formed wrong answers")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--merges", max_merges, "most BPE merges to learn (letter runs only)")->check(CLI::Range(0, 10000));
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    stapo::SyntheticRng rng(seed);
    auto pair_line = [](const std::string& id, const stapo::SyntheticPair& p) {
      nlohmann::json j = {{"id", id}, {"prompt", p.prompt}, {"chosen", p.chosen}, {"rejected", p.rejected}};
      return j.dump() + "\n";
    };
    // Held-out problems first, so the training draw can avoid their prompts.
    std::set<std::string> eval_prompts;
    std::string eval_pairs, eval_answers;
    for (int attempts = 0; static_cast<int>(eval_prompts.size()) < num_eval; ++attempts) {
      STAPO_CHECK(attempts < 100 * num_eval + 1000, "cannot draw ", num_eval, " distinct held-out problems");
      stapo::SyntheticPair p = stapo::synthetic_pair(rng, malformed_fraction);
      if (!eval_prompts.insert(p.prompt).second) continue;
      std::string id = stapo::cat("eval-", eval_prompts.size() - 1);
      eval_pairs += pair_line(id, p);
      eval_answers += nlohmann::json({{"id", id}, {"prompt", p.prompt}, {"answer", p.chosen}}).dump() + "\n";
    }
    std::string train;
    std::vector<std::string> corpus;  // what the tokenizer sees outside the special tokens
    for (int i = 0; i < num_pairs;) {
      stapo::SyntheticPair p = stapo::synthetic_pair(rng, malformed_fraction);
      if (eval_prompts.count(p.prompt)) continue;
      train += pair_line(stapo::cat("train-", i), p);
      corpus.push_back("user\n" + p.prompt + "\n");
      corpus.push_back("assistant\n" + p.chosen + "\n");
      ++i;
    }
    stapo::ByteLevelBpe bpe = stapo::bpe_train_letter_runs(corpus, max_merges);

    stapo::make_directories(out_dir);
    stapo::write_file_atomic(out_dir + "/train.jsonl", train);
    stapo::write_file_atomic(out_dir + "/eval.jsonl", eval_pairs);
    stapo::write_file_atomic(out_dir + "/eval_prompts.jsonl", eval_answers);
    stapo::write_file_atomic(out_dir + "/tokenizer.json", stapo::bpe_tokenizer_json(bpe));
    stapo::write_file_atomic(out_dir + "/tokenizer_config.json", stapo::bpe_tokenizer_config_json());
    fprintf(stderr, "wrote %d training pairs, %d held-out problems and a tokenizer of %zu tokens (%zu merges) to %s\n",
            num_pairs, num_eval, bpe.tokens.size() + bpe.special_tokens.size(), bpe.merges.size(), out_dir.c_str());
  });
}
