// make_synthetic_data: the demo's data set and tokenizer (data/synthetic/task.h, tokenizer_builder.h).
//   OUT/train.jsonl         preference pairs {"id","prompt","chosen","rejected"} (the pipeline's plain layout)
//   OUT/eval.jsonl          held-out pairs, same layout (eval reward accuracy, z, entropy, log-probs)
//   OUT/eval_prompts.jsonl  the same held-out problems as {"id","prompt","answer"} (task accuracy of generations)
//   OUT/tokenizer.json, OUT/tokenizer_config.json   the tiny byte-level BPE tokenizer, trained on train.jsonl
// With --model-out DIR: a randomly initialised tiny Llama for that tokenizer (config.json, model.safetensors
// and the tokenizer files), the demo's starting point.
// Held-out prompts never occur in train.jsonl. The same flags give byte-identical files.
#include <nlohmann/json.hpp>
#include <set>

#include "common/cli.h"
#include "common/file_io.h"
#include "data/synthetic/task.h"               // defines: SyntheticRng, synthetic_pair
#include "data/synthetic/tokenizer_builder.h"  // defines: bpe_train_letter_runs, bpe_tokenizer_json
#include "model/model.h"                       // defines: CpuModel, model_init_random, model_save_hf

// A Llama of the given size whose vocabulary is the tokenizer's, rounded up to a multiple of vocab_multiple
// (the CUDA engine wants multiples of 8; no token maps to the extra rows, as in HF's padded vocabularies), and
// whose end of text is <|im_end|>.
static stapo::ModelConfig tiny_llama_config(const stapo::ByteLevelBpe& bpe, int layers, int hidden, int heads,
                                            int kv_heads, int ffn, int vocab_multiple) {
  stapo::ModelConfig c;
  const int tokens = static_cast<int>(bpe.tokens.size() + bpe.special_tokens.size());
  c.vocab_size = (tokens + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  STAPO_CHECK(hidden % heads == 0, "--hidden ", hidden, " must be a multiple of --heads ", heads);
  c.head_dim = hidden / heads;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 128;
  for (size_t i = 0; i < bpe.special_tokens.size(); ++i)
    if (bpe.special_tokens[i] == "<|im_end|>") c.eos_token_ids = {static_cast<int>(bpe.tokens.size() + i)};
  c.torch_dtype = "float32";
  return c;
}

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
      ->check(stapo::cli_range(0, 1));
  app.add_option("--merges", max_merges, "most BPE merges to learn (letter runs only)")->check(CLI::Range(0, 10000));
  std::string model_dir;
  int layers = 2, hidden = 64, heads = 4, kv_heads = 2, ffn = 192, vocab_multiple = 1;
  app.add_option("--model-out", model_dir, "also write a randomly initialised tiny Llama for the tokenizer here");
  app.add_option("--layers", layers, "model: decoder layers")->check(CLI::Range(1, 64));
  app.add_option("--hidden", hidden, "model: hidden size")->check(CLI::Range(8, 4096));
  app.add_option("--heads", heads, "model: attention heads")->check(CLI::Range(1, 64));
  app.add_option("--kv-heads", kv_heads, "model: key/value heads")->check(CLI::Range(1, 64));
  app.add_option("--ffn", ffn, "model: MLP intermediate size")->check(CLI::Range(8, 16384));
  app.add_option("--vocab-multiple", vocab_multiple,
                 "model: vocabulary rounded up to a multiple of this (8 for the CUDA engine); the extra rows are "
                 "no token's")
      ->check(CLI::Range(1, 1024));
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
    if (!model_dir.empty()) {
      stapo::CpuModel<float> model(tiny_llama_config(bpe, layers, hidden, heads, kv_heads, ffn, vocab_multiple));
      stapo::model_init_random(model, seed);
      stapo::model_save_hf(model, model_dir, stapo::DType::F32);
      stapo::write_file_atomic(model_dir + "/tokenizer.json", stapo::bpe_tokenizer_json(bpe));
      stapo::write_file_atomic(model_dir + "/tokenizer_config.json", stapo::bpe_tokenizer_config_json());
      fprintf(stderr, "wrote a tiny Llama (%zu parameters) to %s\n", model.num_params(), model_dir.c_str());
    }
    fprintf(stderr, "wrote %d training pairs, %d held-out problems and a tokenizer of %zu tokens (%zu merges) to %s\n",
            num_pairs, num_eval, bpe.tokens.size() + bpe.special_tokens.size(), bpe.merges.size(), out_dir.c_str());
  });
}
