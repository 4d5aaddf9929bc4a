// generate: text from an HF checkpoint on the fp32 CPU reference, KV-cached (model/generate.h).
//   ./generate --model DIR --prompt "37+45="            one user message, rendered by the chat template
//   ./generate --model DIR --messages chat.json         [{"role": "user", "content": "..."}, ...]
// Prints the reply (or, with --ids, its token ids) on stdout; stops at EOS / end of turn or --max-new-tokens.
// The id that stopped generation (EOS, end of turn) is not part of the reply: neither printed nor decoded.
#include <omp.h>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/file_io.h"
#include "model/generate.h"       // defines: generate, SamplingOptions
#include "model/generate_chat.h"  // defines: chat_prompt_ids, reply_stop_ids

int main(int argc, char** argv) {
  CLI::App app{"generate: sample a reply from a Llama/Mistral checkpoint on the CPU (fp32, KV cache)"};
  app.name("generate");
  std::string model_dir, tokenizer_path, prompt, messages_path, template_name = "auto";
  stapo::SamplingOptions options;
  bool print_ids = false;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer file or directory (default: the model directory)");
  auto* prompt_opt = app.add_option("--prompt", prompt, "the user message");
  auto* messages_opt =
      app.add_option("--messages", messages_path, "JSON file: a list of {\"role\", \"content\"} messages");
  prompt_opt->excludes(messages_opt);
  app.add_option("--template", template_name, "chat template: llama3, llama2, mistral, chatml, plain, auto");
  app.add_option("--temperature", options.temperature, "0 = greedy")->check(stapo::cli_range(0, 100));
  app.add_option("--top-p", options.top_p, "nucleus sampling mass")->check(stapo::cli_positive(1));
  app.add_option("--max-new-tokens", options.max_new_tokens, "most tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--seed", options.seed, "sampling seed");
  app.add_flag("--ids", print_ids,
               "print the generated token ids instead of the text (without the EOS / end-of-turn id that stopped "
               "generation)");
  int threads = 0;
  stapo::cli_add_threads(app, threads, "OpenMP threads (0: OpenMP's default; 1 is fastest for tiny models)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    if (threads > 0) omp_set_num_threads(threads);
    STAPO_CHECK(!prompt.empty() || !messages_path.empty(), "give --prompt TEXT or --messages FILE.json");
    std::vector<stapo::ChatMessage> messages;
    if (!messages_path.empty()) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(stapo::read_text_file(messages_path));
      } catch (const nlohmann::json::exception& e) {
        stapo::fail(messages_path, ": not valid JSON: ", e.what());
      }
      STAPO_CHECK(j.is_array() && !j.empty(), messages_path, ": expected a non-empty list of messages");
      for (size_t i = 0; i < j.size(); ++i) {
        auto is_text = [&](const char* key) { return j[i].contains(key) && j[i][key].is_string(); };
        STAPO_CHECK(j[i].is_object() && is_text("role") && is_text("content"), messages_path, ": message ", i,
                    " needs string fields \"role\" and \"content\"");
        messages.push_back({j[i]["role"], j[i]["content"]});
      }
    } else {
      messages.push_back({"user", prompt});
    }
    auto model = stapo::model_load_hf<float>(model_dir);
    auto tokenizer = stapo::Tokenizer::load(tokenizer_path.empty() ? model_dir : tokenizer_path);
    STAPO_CHECK(tokenizer->vocab_size() <= model->config().vocab_size, "the tokenizer has ", tokenizer->vocab_size(),
                " tokens but the model's vocab_size is ", model->config().vocab_size, ": they do not belong together");
    options.vocab_limit = tokenizer->vocab_size();
    auto chat_template = stapo::ChatTemplate::by_name(template_name, *tokenizer);
    std::vector<int32_t> ids = stapo::chat_prompt_ids(*tokenizer, chat_template, messages);
    stapo::Generation out =
        stapo::generate(*model, ids, stapo::reply_stop_ids(*tokenizer, chat_template, model->config()), options);
    if (print_ids) {
      for (size_t i = 0; i < out.ids.size(); ++i) printf("%s%d", i ? " " : "", out.ids[i]);
      printf("\n");
    } else {
      printf("%s\n", tokenizer->decode(out.ids).c_str());
    }
    if (!out.stopped) fprintf(stderr, "generate: stopped at --max-new-tokens %d\n", options.max_new_tokens);
  });
}
