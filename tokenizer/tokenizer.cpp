// Tokenizer::load: picks the loader from the path and the file's content, and reads tokenizer_config.json and
// chat_template.jinja from the same folder (chat template, special-token names, add_bos_token). Also the list of
// tokenizer files a checkpoint carries.
#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "tokenizer/tokenizer_files.h"

namespace stapo {

const std::vector<std::string> kBosNames = {"<s>", "<|begin_of_text|>"};
const std::vector<std::string> kEosNames = {"</s>", "<|end_of_text|>", "<|endoftext|>"};

int32_t find_bos_eos(const std::string& configured, const std::vector<std::string>& usual,
                     const std::unordered_map<std::string, int32_t>& ids) {
  if (!configured.empty()) {
    auto it = ids.find(configured);
    return it == ids.end() ? -1 : it->second;
  }
  for (const std::string& name : usual)
    if (auto it = ids.find(name); it != ids.end()) return it->second;
  return -1;
}

std::string content_hash(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  char out[17];
  snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

// bos_token / eos_token are a string or an AddedToken object {"content": ...}.
static std::string token_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content")) return j["content"].get<std::string>();
  return "";
}

TokenizerConfig read_tokenizer_config(const std::string& dir) {
  TokenizerConfig config;
  std::string path = dir + "/tokenizer_config.json";
  if (file_exists(path)) {
    try {
      auto j = nlohmann::json::parse(read_text_file(path));
      if (j.contains("chat_template")) {
        const auto& t = j["chat_template"];
        if (t.is_string()) {
          config.chat_template = t.get<std::string>();
        } else if (t.is_array()) {  // named templates: use "default"
          for (const auto& named : t)
            if (named.value("name", "") == "default") config.chat_template = named.at("template").get<std::string>();
        }
        if (!config.chat_template.empty()) config.chat_template_origin = path + " (chat_template)";
      }
      std::string* tokens[] = {&config.bos_token, &config.eos_token, &config.unk_token, &config.pad_token};
      const char* keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
      for (int i = 0; i < 4; ++i)
        if (j.contains(keys[i])) *tokens[i] = token_text(j[keys[i]]);
      if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) config.add_bos_token = j["add_bos_token"];
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": ", e.what());
    }
  }
  // transformers 5 saves the template beside the config; when both exist, the file wins (as transformers reads).
  std::string jinja = dir + "/chat_template.jinja";
  if (file_exists(jinja)) {
    config.chat_template = read_text_file(jinja);
    config.chat_template_origin = jinja;
  }
  return config;
}

const std::vector<std::string> kTokenizerFiles = {"tokenizer.json",          "tokenizer.model",
                                                  "tokenizer_config.json",   "special_tokens_map.json",
                                                  "chat_template.jinja",     "generation_config.json"};

std::vector<std::string> copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> copied;
  for (const std::string& name : kTokenizerFiles) {
    const fs::path from = fs::path(from_dir) / name, to = fs::path(to_dir) / name;
    if (!fs::exists(from)) continue;
    std::error_code same_error;
    if (fs::exists(to) && fs::equivalent(from, to, same_error)) continue;  // copying a folder onto itself
    std::error_code error;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, error);
    STAPO_CHECK(!error, "cannot copy ", from.string(), " to ", to.string(), ": ", error.message());
    copied.push_back(name);
  }
  return copied;
}

// tiktoken files are lines of base64 and a rank; a SentencePiece model is binary protobuf.
static bool looks_like_tiktoken(const std::string& contents) {
  size_t end = contents.find('\n');
  std::string_view line(contents.data(), end == std::string::npos ? contents.size() : end);
  size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == line.size()) return false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    bool ok = i < space ? (isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')
                        : (i == space || (c >= '0' && c <= '9') || (c == '\r' && i + 1 == line.size()));
    if (!ok) return false;
  }
  return true;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  std::string file = path, dir;
  if (is_directory(path)) {
    dir = path;
    file = path + "/tokenizer.json";
    if (!file_exists(file)) file = path + "/tokenizer.model";
    STAPO_CHECK(file_exists(file), path, " has neither tokenizer.json nor tokenizer.model");
  } else {
    STAPO_CHECK(file_exists(path), "tokenizer file ", path, " does not exist");
    size_t slash = path.rfind('/');
    dir = slash == std::string::npos ? "." : path.substr(0, slash);
  }
  TokenizerConfig config = read_tokenizer_config(dir);
  std::string contents = read_text_file(file);
  std::unique_ptr<Tokenizer> tokenizer;
  if (file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0)
    tokenizer = load_hf_tokenizer_json(file, contents, config);
  else if (looks_like_tiktoken(contents))
    tokenizer = load_tiktoken(file, contents, config);
  else
    tokenizer = load_sentencepiece_model(file, contents, config);
  tokenizer->config_ = std::move(config);
  return tokenizer;
}

}  // namespace stapo
