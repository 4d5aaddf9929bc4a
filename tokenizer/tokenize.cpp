// tokenize: text on stdin → token ids on one line (or ids → text with --decode, or a conversation rendered
// by a chat template and encoded). All of stdin is the text, byte for byte: nothing is stripped.
//   ./tokenize --tokenizer PATH [--bos] < text.txt
//   ./tokenize --tokenizer PATH --decode < ids.txt
//   ./tokenize --tokenizer PATH --template llama3|llama2|mistral|chatml|plain|auto --messages chat.json
// chat.json: [{"role": "system"|"user"|"assistant", "content": "..."}, ...] (or {"messages": [...]}); when
// the last message is not the assistant's, the generation prompt is appended.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/cli.h"        // defines: STAPO_PARSE_CLI, run_main
#include "common/file_io.h"    // defines: read_text_file
#include "tokenizer/chat_template.h"  // defines: ChatTemplate, encode_pieces
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

static std::vector<stapo::ChatMessage> read_messages(const std::string& path) {
  std::vector<stapo::ChatMessage> messages;
  try {
    auto j = nlohmann::json::parse(stapo::read_text_file(path));
    const auto& list = j.is_object() ? j.at("messages") : j;
    STAPO_CHECK(list.is_array(), path, ": expected a JSON array of {\"role\", \"content\"} messages");
    for (const auto& m : list) messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  } catch (const nlohmann::json::exception& e) {
    stapo::fail(path, ": ", e.what(), " (expected [{\"role\": ..., \"content\": ...}, ...])");
  }
  return messages;
}

static void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  line += '\n';
  fwrite(line.data(), 1, line.size(), stdout);
}

int main(int argc, char** argv) {
  CLI::App app{"Tokenize stdin (or a chat) with a tokenizer.json / tokenizer.model / tiktoken file"};
  std::string tokenizer_path, template_name, messages_path;
  bool bos = false, decode = false;
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json, tokenizer.model or a folder holding one")
      ->required();
  app.add_flag("--bos", bos, "prepend the BOS token (not added twice when a template renders it)");
  app.add_flag("--decode", decode, "read ids (whitespace-separated) and print the text");
  app.add_option("--template", template_name,
                 "chat template: auto (the model's own Jinja template), or llama3, llama2, mistral, chatml, plain");
  app.add_option("--messages", messages_path, "JSON file with the conversation (needs --template)");
  STAPO_PARSE_CLI(app, argc, argv);
  return stapo::run_main([&] {
    STAPO_CHECK(template_name.empty() == messages_path.empty(), "--template and --messages go together");
    STAPO_CHECK(!(decode && !template_name.empty()), "--decode cannot be combined with --template");
    auto tokenizer = stapo::Tokenizer::load(tokenizer_path);
    if (decode) {
      std::vector<int32_t> ids;
      std::string word;
      while (std::cin >> word) {
        size_t used = 0;
        long long id = -1;
        try {
          id = std::stoll(word, &used);
        } catch (const std::exception&) {
        }
        STAPO_CHECK(used == word.size() && id >= INT32_MIN && id <= INT32_MAX, "--decode: \"", word,
                    "\" on stdin is not a token id");
        ids.push_back(static_cast<int32_t>(id));
      }
      std::string text = tokenizer->decode(ids);
      fwrite(text.data(), 1, text.size(), stdout);
      return;
    }
    std::vector<int32_t> ids;
    bool has_bos = false;
    if (!template_name.empty()) {
      auto chat = stapo::ChatTemplate::by_name(template_name, *tokenizer);
      auto messages = read_messages(messages_path);
      bool generation_prompt = messages.empty() || messages.back().role != "assistant";
      ids = stapo::encode_pieces(*tokenizer, chat.render(messages, generation_prompt));
      has_bos = chat.renders_bos();
    } else {
      std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
      ids = tokenizer->encode(text);
    }
    if (bos && !has_bos) {
      STAPO_CHECK(tokenizer->bos_id() >= 0, "--bos: the tokenizer has no BOS token");
      ids.insert(ids.begin(), tokenizer->bos_id());
    }
    print_ids(ids);
  });
}
