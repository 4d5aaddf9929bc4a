// sample_pairs: on-policy preference pairs for the synthetic task, as the StaPO paper's instruct setups make
// theirs (replies sampled from the model being trained, ranked): for every prompt of --prompts, k replies of
// the SFT checkpoint at temperature 1 (seeded, KV cache), each checked by the task's verifier; a pair is
// chosen = the first correct reply, rejected = the first incorrect one (whatever the model produced, well-formed
// or not, except an empty reply: a preference pair cannot hold an empty response, so those are counted and passed
// over). Prompts without both a correct and an incorrect reply give no pair; they are counted and printed.
// Output: JSONL {"id","prompt","chosen","rejected"} (prepare_data's plain layout), the same bytes for the same
// flags. Printed: the counts and the distribution of Δ (avg reward) of the written pairs under the model that
// sampled them.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "common/cli.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "data/synthetic/replies.h"  // defines: SyntheticResponder, read_synthetic_prompts, reply_delta

namespace {

double quantile(const std::vector<double>& sorted, double q) {
  const double at = q * double(sorted.size() - 1);
  const size_t lo = size_t(at), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (at - double(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sample_pairs: on-policy preference pairs for the synthetic task from a checkpoint's own replies"};
  app.name("sample_pairs");
  std::string model_dir, tokenizer_path, prompts_path, out_path, template_name = "chatml";
  int samples = 8, threads = 1;
  stapo::SamplingOptions sampling;
  sampling.temperature = 1.0f;
  sampling.max_new_tokens = 2 * stapo::kSyntheticMaxAnswer;
  uint64_t seed = 1;
  double margin_right = 0.7;
  app.add_option("--model", model_dir, "the checkpoint that samples (the SFT model the pairs will train)")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer file or directory (default: the model directory)");
  app.add_option("--prompts", prompts_path, "JSONL with a \"prompt\" field per line (e.g. train.jsonl)")->required();
  app.add_option("--out", out_path, "output JSONL of pairs")->required();
  app.add_option("--template", template_name, "chat template the model was trained with");
  app.add_option("--samples", samples, "replies sampled per prompt (k)")->check(CLI::Range(2, 1024));
  app.add_option("--temperature", sampling.temperature, "sampling temperature")->check(CLI::Range(0.01, 100.0));
  app.add_option("--max-new-tokens", sampling.max_new_tokens, "a reply is cut (and fails) after this many tokens")
      ->check(CLI::Range(1, 4096));
  app.add_option("--seed", seed, "sampling seed (each reply draws from its own stream)");
  app.add_option("--threads", threads, "prompts answered in parallel (the output does not depend on it)")
      ->check(CLI::Range(1, 256));
  app.add_option("--margin-right", margin_right, "report the share of pairs with Δ above this (StaPO's m_r)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    const std::vector<stapo::SyntheticPrompt> prompts = stapo::read_synthetic_prompts(prompts_path);
    const stapo::SyntheticResponder responder(model_dir, tokenizer_path, template_name);
    const int64_t n = int64_t(prompts.size());
    enum Outcome { kPair, kNoIncorrect, kNoCorrect };  // kNoIncorrect: none that is non-empty
    struct Result {
      Outcome outcome = kPair;
      std::string line;  // the pair's JSONL line
      double delta = 0;
      bool rejected_degenerate = false;
      int empty_replies = 0;
      stapo::ReplyStats stats;
    };
    std::vector<Result> results(n);
    // The model's own OpenMP loops stay on one thread: at this size their fork/join costs more than the work, and
    // the prompts are split between --threads instead.
    omp_set_num_threads(1);
    stapo::Progress progress("sample_pairs", n);
    int64_t done = 0;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
      std::vector<stapo::SyntheticReply> replies;
      for (int s = 0; s < samples; s++) {
        stapo::SamplingOptions options = sampling;
        options.seed = stapo::synthetic_reply_seed(seed, i, s);
        replies.push_back(responder.reply(prompts[i].prompt, options));
      }
      Result& r = results[i];
      r.stats.add_group(replies);
      const auto correct = std::find_if(replies.begin(), replies.end(), [](auto& x) { return x.score.correct; });
      const auto wrong = std::find_if(replies.begin(), replies.end(),
                                      [](auto& x) { return !x.score.correct && !x.text.empty(); });
      for (const stapo::SyntheticReply& x : replies) r.empty_replies += x.text.empty();
      if (correct == replies.end()) {
        r.outcome = kNoCorrect;
      } else if (wrong == replies.end()) {
        r.outcome = kNoIncorrect;
      } else {
        r.delta = stapo::reply_delta(*correct, *wrong);
        r.rejected_degenerate = wrong->score.degenerate;
        nlohmann::ordered_json j = {{"id", prompts[i].id},
                                    {"prompt", prompts[i].prompt},
                                    {"chosen", correct->text},
                                    {"rejected", wrong->text}};
        r.line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      }
#pragma omp critical
      progress.update(++done, 0);
    }
    progress.finish();
    std::string text;
    std::vector<double> written;
    stapo::ReplyStats total;
    int64_t no_incorrect = 0, no_correct = 0, rejected_degenerate = 0, empty_replies = 0;
    for (const Result& r : results) {
      total.replies += r.stats.replies;
      total.correct += r.stats.correct;
      total.degenerate += r.stats.degenerate;
      no_incorrect += r.outcome == kNoIncorrect;
      empty_replies += r.empty_replies;
      no_correct += r.outcome == kNoCorrect;
      if (r.outcome != kPair) continue;
      text += r.line;
      written.push_back(r.delta);
      rejected_degenerate += r.rejected_degenerate;
    }
    stapo::write_file_atomic(out_path, text);
    fprintf(stderr, "%lld prompts, %d replies each: %.1f%% of replies correct, %.1f%% degenerate, %lld empty\n",
            (long long)n, samples, 100 * total.accuracy(), 100 * total.degeneration(), (long long)empty_replies);
    fprintf(stderr,
            "wrote %zu pairs to %s; skipped %lld prompts without a correct reply and %lld without a (non-empty) "
            "incorrect one\n",
            written.size(), out_path.c_str(), (long long)no_correct, (long long)no_incorrect);
    if (written.empty()) return;
    fprintf(stderr, "rejected replies: %lld well-formed wrong answers, %lld degenerate (malformed or never ended)\n",
            (long long)(written.size() - rejected_degenerate), (long long)rejected_degenerate);
    std::sort(written.begin(), written.end());
    const double above = double(written.end() - std::upper_bound(written.begin(), written.end(), margin_right));
    fprintf(stderr,
            "Δ (avg reward, under the sampling model) of the pairs: 5%% %.3f, 25%% %.3f, 50%% %.3f, 75%% %.3f, "
            "95%% %.3f; %.1f%% above %g\n",
            quantile(written, 0.05), quantile(written, 0.25), quantile(written, 0.5), quantile(written, 0.75),
            quantile(written, 0.95), 100 * above / double(written.size()), margin_right);
  });
}
