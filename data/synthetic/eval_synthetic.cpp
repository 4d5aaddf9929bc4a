// eval_synthetic: task accuracy and degeneration rate of a checkpoint's greedy replies on the held-out
// prompts of make_synthetic_data (eval_prompts.jsonl). A reply is correct when synthetic_verify accepts it;
// it is degenerate when it no longer has the answer format (synthetic_parses fails) or never ends (no
// end-of-turn within --max-new-tokens). Prints one JSON line on stdout, for dev/demo.sh's table and plot.
#include <omp.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/cli.h"
#include "common/file_io.h"
#include "data/synthetic/task.h"  // defines: synthetic_score
#include "model/generate.h"       // defines: generate, SamplingOptions
#include "model/generate_chat.h"  // defines: chat_prompt_ids, reply_stop_ids

int main(int argc, char** argv) {
  CLI::App app{"eval_synthetic: task accuracy and degeneration rate of greedy replies on the synthetic task"};
  app.name("eval_synthetic");
  std::string model_dir, tokenizer_path, prompts_path, template_name = "chatml";
  stapo::SamplingOptions greedy;
  greedy.max_new_tokens = 2 * stapo::kSyntheticMaxAnswer;
  int num_samples = 3;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer file or directory (default: the model directory)");
  app.add_option("--prompts", prompts_path, "eval_prompts.jsonl written by make_synthetic_data")->required();
  app.add_option("--template", template_name, "chat template the model was trained with");
  app.add_option("--max-new-tokens", greedy.max_new_tokens, "a reply longer than this is degenerate")
      ->check(CLI::Range(1, 4096));
  app.add_option("--samples", num_samples, "replies to include in the output")->check(CLI::Range(0, 1000));
  int threads = 1;
  app.add_option("--threads", threads, "OpenMP threads (0: OpenMP's default); one suits tiny models best");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    auto model = stapo::model_load_hf<float>(model_dir);
    auto tokenizer = stapo::Tokenizer::load(tokenizer_path.empty() ? model_dir : tokenizer_path);
    greedy.vocab_limit = tokenizer->vocab_size();
    auto chat_template = stapo::ChatTemplate::by_name(template_name, *tokenizer);
    const std::vector<int32_t> stop_ids = stapo::reply_stop_ids(*tokenizer, chat_template, model->config());
    std::istringstream lines(stapo::read_text_file(prompts_path));
    int n = 0, correct = 0, degenerate = 0, line_number = 0;
    nlohmann::json samples = nlohmann::json::array();
    for (std::string line; std::getline(lines, line);) {
      ++line_number;
      if (line.empty()) continue;
      nlohmann::json record;
      try {
        record = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        stapo::fail(prompts_path, ":", line_number, ": not valid JSON: ", e.what());
      }
      STAPO_CHECK(record.contains("prompt") && record["prompt"].is_string(), prompts_path, ":", line_number,
                  ": needs a string field \"prompt\"");
      const std::string prompt = record["prompt"];
      const std::vector<int32_t> ids = stapo::chat_prompt_ids(*tokenizer, chat_template, {{"user", prompt}});
      const stapo::Generation reply = stapo::generate(*model, ids, stop_ids, greedy);
      const std::string answer = tokenizer->decode(reply.ids);
      const stapo::SyntheticScore score = stapo::synthetic_score(prompt, answer, reply.stopped);
      ++n;
      correct += score.correct;
      degenerate += score.degenerate;
      if ((int)samples.size() < num_samples)
        samples.push_back({{"prompt", prompt}, {"reply", answer}, {"correct", score.correct}});
    }
    STAPO_CHECK(n > 0, prompts_path, " has no prompts");
    nlohmann::ordered_json out;
    out["model"] = model_dir;
    out["prompts"] = n;
    out["task_accuracy"] = double(correct) / n;
    out["degeneration_rate"] = double(degenerate) / n;
    out["samples"] = samples;
    printf("%s\n", out.dump().c_str());
  });
}
