// Tokenizer::load: picks the loader from the path and the file's content, and reads tokenizer_config.json
// from the same folder (chat template, BOS/EOS names, add_bos_token).
#include "tokenizer/tokenizer.h"

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
  if (!file_exists(path)) return config;
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
    }
    if (j.contains("bos_token")) config.bos_token = token_text(j["bos_token"]);
    if (j.contains("eos_token")) config.eos_token = token_text(j["eos_token"]);
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) config.add_bos_token = j["add_bos_token"];
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": ", e.what());
  }
  return config;
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
  if (file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0)
    return load_hf_tokenizer_json(file, contents, config);
  if (looks_like_tiktoken(contents)) return load_tiktoken(file, contents, config);
  return load_sentencepiece_model(file, contents, config);
}

}  // namespace stapo
