// prepare_data: preference JSONL → one tokenized shard (docs/data-format.md), printing what was read,
// written, truncated and skipped.
#include <chrono>
#include <cstdio>

#include "common/cli.h"
#include "common/file_io.h"  // defines: output_check
#include "data/prepare.h"  // defines: prepare_data, PrepareConfig, PrepareStats

int main(int argc, char** argv) {
  CLI::App app{"prepare_data: tokenize preference pairs (JSONL: plain strings, TRL message lists or whole "
               "conversations) through a chat template into a binary shard for the trainers"};
  app.name("prepare_data");
  std::string tokenizer_path, template_name = "auto", truncation = "keep_end";
  stapo::PrepareConfig config;
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json / tokenizer.model, or the model directory")
      ->required();
  app.add_option("--template", template_name, "chat template: llama3 | llama2 | mistral | chatml | plain | auto")
      ->capture_default_str();
  app.add_option("--in", config.inputs, "input JSONL file(s); the layout is detected per file")->required();
  app.add_option("--out", config.output, "output shard")->required();
  app.add_option("--max-length", config.truncation.max_length, "most tokens of prompt + response")
      ->capture_default_str();
  app.add_option("--max-prompt-length", config.truncation.max_prompt_length,
                 "prompt tokens kept when a pair is longer than --max-length")
      ->capture_default_str();
  app.add_option("--truncation", truncation, "which part of a long prompt to keep")
      ->check(CLI::IsMember({"keep_end", "keep_start"}))
      ->capture_default_str();
  app.add_flag("--skip-bad", config.skip_bad, "skip and count bad lines instead of stopping at the first");
  STAPO_PARSE_CLI(app, argc, argv);

  return stapo::run_main([&] {
    config.truncation.truncation = stapo::truncation_from_name(truncation);
    std::vector<std::string> inputs = config.inputs;
    inputs.push_back(tokenizer_path);
    stapo::output_check("--out", config.output, inputs);
    auto start = std::chrono::steady_clock::now();
    auto tokenizer = stapo::Tokenizer::load(tokenizer_path);
    auto chat_template = stapo::ChatTemplate::by_name(template_name, *tokenizer);
    stapo::PrepareStats stats = stapo::prepare_data(*tokenizer, chat_template, config);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    printf("%s", stats.report().c_str());
    printf("wrote %s (template %s) in %.2fs: %.0f pairs/s\n", config.output.c_str(), chat_template.name().c_str(),
           seconds, static_cast<double>(stats.input.read) / seconds);
  });
}
