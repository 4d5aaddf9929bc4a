// eval_synthetic: how a checkpoint answers the held-out prompts of make_synthetic_data (eval_prompts.jsonl), from
// its own replies (data/synthetic/replies.h):
//   greedy replies: task accuracy (synthetic_verify accepts the reply), degeneration rate (the reply lost the
//     answer format, or never ended within --max-new-tokens), and the mean per-token entropy of the model's
//     next-token distribution along them and their mean length in tokens;
//   --sampled K replies per prompt at temperature 1 (seeded): the same, plus distinct-2 (distinct token bigrams
//     within each prompt's K replies over all their bigrams): entropy drift and collapse of diversity are the
//     instability signals the StaPO paper reports.
// Prints one JSON line on stdout, for dev/demo.sh's table and plot.
#include <omp.h>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "data/synthetic/replies.h"  // defines: SyntheticResponder, ReplyStats, read_synthetic_prompts

int main(int argc, char** argv) {
  CLI::App app{"eval_synthetic: task accuracy, degeneration, entropy and diversity of a checkpoint's own replies"};
  app.name("eval_synthetic");
  std::string model_dir, tokenizer_path, prompts_path, template_name = "chatml";
  stapo::SamplingOptions greedy;
  greedy.max_new_tokens = 2 * stapo::kSyntheticMaxAnswer;
  int num_examples = 3, sampled = 0, threads = 1;
  uint64_t seed = 1;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer file or directory (default: the model directory)");
  app.add_option("--prompts", prompts_path, "eval_prompts.jsonl written by make_synthetic_data")->required();
  app.add_option("--template", template_name, "chat template the model was trained with");
  app.add_option("--max-new-tokens", greedy.max_new_tokens, "a reply longer than this is degenerate")
      ->check(CLI::Range(1, 4096));
  app.add_option("--samples", num_examples, "greedy replies to include in the output")->check(CLI::Range(0, 1000));
  app.add_option("--sampled", sampled, "also K replies per prompt at temperature 1 (entropy, distinct-2); 0: none")
      ->check(CLI::Range(0, 1024));
  app.add_option("--seed", seed, "seed of the sampled replies");
  stapo::cli_add_threads(app, threads, "OpenMP threads (0: OpenMP's default); one suits tiny models best");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    const stapo::SyntheticResponder responder(model_dir, tokenizer_path, template_name);
    stapo::ReplyStats greedy_stats, sampled_stats;
    nlohmann::json examples = nlohmann::json::array();
    const std::vector<stapo::SyntheticPrompt> prompts = stapo::read_synthetic_prompts(prompts_path);
    for (size_t i = 0; i < prompts.size(); i++) {
      const std::string& prompt = prompts[i].prompt;
      const stapo::SyntheticReply reply = responder.reply(prompt, greedy);
      greedy_stats.add(reply);
      if ((int)examples.size() < num_examples)
        examples.push_back({{"prompt", prompt}, {"reply", reply.text}, {"correct", reply.score.correct}});
      if (sampled == 0) continue;
      std::vector<stapo::SyntheticReply> group;
      for (int s = 0; s < sampled; s++) {
        stapo::SamplingOptions options = greedy;
        options.temperature = 1.0f;
        options.seed = stapo::synthetic_reply_seed(seed, int64_t(i), s);
        group.push_back(responder.reply(prompt, options));
      }
      sampled_stats.add_group(group);
    }
    nlohmann::ordered_json out;
    out["model"] = model_dir;
    out["prompts"] = greedy_stats.replies;
    out["task_accuracy"] = greedy_stats.accuracy();
    out["degeneration_rate"] = greedy_stats.degeneration();
    out["greedy_entropy"] = greedy_stats.mean_entropy();
    out["greedy_length"] = greedy_stats.mean_length();
    if (sampled > 0) {
      out["sampled_per_prompt"] = sampled;
      out["sampled_accuracy"] = sampled_stats.accuracy();
      out["sampled_degeneration_rate"] = sampled_stats.degeneration();
      out["sampled_entropy"] = sampled_stats.mean_entropy();
      out["sampled_length"] = sampled_stats.mean_length();
      out["distinct_2"] = sampled_stats.distinct_2();
    }
    out["samples"] = examples;
    printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  });
}
