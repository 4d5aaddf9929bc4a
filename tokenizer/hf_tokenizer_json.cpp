// HF tokenizer.json (model.type BPE) → BpeTokenizer::Parts. Supported pieces, everything else is an error
// naming it: normalizers Prepend / Replace(String) / Sequence; pre-tokenizers Split / ByteLevel / Metaspace /
// Sequence; decoders ByteLevel / Metaspace / Replace / ByteFallback / Fuse / Strip / Sequence;
// post-processor TemplateProcessing (for "adds BOS").
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/utf8.h"

namespace stapo {

using json = nlohmann::json;

// A byte-level vocabulary string back to the raw bytes it stands for.
static std::string byte_level_to_bytes(const std::string& token, const std::string& path) {
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    size_t len = utf8_char_length(token, i);
    STAPO_CHECK(len > 0, path, ": vocabulary token is not valid UTF-8");
    int byte = byte_level_byte(utf8_decode(token, i, len));
    STAPO_CHECK(byte >= 0, path, ": token \"", token, "\" has a character outside the ByteLevel alphabet");
    bytes += static_cast<char>(byte);
    i += len;
  }
  return bytes;
}

static const json& member(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  STAPO_CHECK(it != j.end(), where, ": missing \"", key, "\"");
  return *it;
}

// An integer in [0, kMaxVocabSize) (checked before converting: a huge float would not fit).
static int64_t small_integer(const json& j, const std::string& path, const std::string& what) {
  STAPO_CHECK(j.is_number_integer(), path, ": ", what, " is not an integer");
  bool ok = j.is_number_unsigned() ? j.get<uint64_t>() < static_cast<uint64_t>(kMaxVocabSize)
                                   : j.get<int64_t>() >= 0 && j.get<int64_t>() < kMaxVocabSize;
  STAPO_CHECK(ok, path, ": ", what, " is ", j.dump(), ", out of range");
  return j.get<int64_t>();
}

// A list of steps: a Sequence's children, one step, or none (null).
static std::vector<json> steps_of(const json& j, const char* list_key) {
  if (j.is_null()) return {};
  if (j.value("type", "") == "Sequence") return j.at(list_key).get<std::vector<json>>();
  return {j};
}

static SplitBehavior split_behavior(const std::string& name, const std::string& path) {
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  fail(path, ": unknown Split behavior \"", name, "\"");
}

static std::shared_ptr<Regex> pattern_regex(const json& pattern, const std::string& path) {
  if (pattern.contains("Regex")) return std::make_shared<Regex>(pattern["Regex"].get<std::string>(), false);
  if (pattern.contains("String")) return std::make_shared<Regex>(pattern["String"].get<std::string>(), true);
  fail(path, ": a Split pattern needs \"Regex\" or \"String\"");
}

// GPT-2's pre-tokenizer regex, which ByteLevel(use_regex=true) applies.
static const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

static void read_normalizers(const json& j, BpeTokenizer::Parts& p, const std::string& path) {
  for (const json& step : steps_of(j, "normalizers")) {
    std::string type = step.value("type", "");
    if (type == "Prepend") {
      p.normalizers.push_back({"", step.at("prepend").get<std::string>(), true});
    } else if (type == "Replace") {
      STAPO_CHECK(step.at("pattern").contains("String"), path, ": Replace normalizer with a regex is not supported");
      p.normalizers.push_back(
          {step["pattern"]["String"].get<std::string>(), step.at("content").get<std::string>(), false});
    } else {
      fail(path, ": normalizer \"", type, "\" is not supported (supported: Prepend, Replace, Sequence)");
    }
  }
}

static PrependScheme metaspace_scheme(const json& step) {
  if (step.contains("prepend_scheme")) {
    std::string s = step["prepend_scheme"].get<std::string>();
    return s == "first" ? PrependScheme::first : s == "never" ? PrependScheme::never : PrependScheme::always;
  }
  return step.value("add_prefix_space", true) ? PrependScheme::always : PrependScheme::never;  // older files
}

static void read_pre_tokenizers(const json& j, BpeTokenizer::Parts& p, const std::string& path) {
  std::vector<json> steps = steps_of(j, "pretokenizers");
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& step = steps[i];
    std::string type = step.value("type", "");
    if (type == "Split") {
      STAPO_CHECK(!p.byte_level && !p.metaspace, path, ": a Split after ByteLevel/Metaspace is not supported");
      p.splits.push_back({pattern_regex(step.at("pattern"), path),
                          split_behavior(step.at("behavior").get<std::string>(), path), step.value("invert", false)});
    } else if (type == "ByteLevel") {
      STAPO_CHECK(i + 1 == steps.size(), path, ": ByteLevel must be the last pre-tokenizer");
      p.byte_level = true;
      if (step.value("add_prefix_space", true)) p.prefix_space_at = static_cast<int>(p.splits.size());
      if (step.value("use_regex", true))
        p.splits.push_back({std::make_shared<Regex>(kGpt2Pattern, false), SplitBehavior::isolated, false});
    } else if (type == "Metaspace") {
      STAPO_CHECK(steps.size() == 1, path, ": Metaspace combined with other pre-tokenizers is not supported");
      p.metaspace = true;
      p.metaspace_replacement = step.value("replacement", std::string("\xE2\x96\x81"));
      p.space_marker = p.metaspace_replacement;
      p.metaspace_prepend = metaspace_scheme(step);
      p.metaspace_split = step.value("split", true);
      if (p.metaspace_split)
        p.splits.push_back({std::make_shared<Regex>(p.metaspace_replacement, true), SplitBehavior::merged_with_next,
                            false});
    } else {
      fail(path, ": pre-tokenizer \"", type, "\" is not supported (supported: Split, ByteLevel, Metaspace, Sequence)");
    }
  }
}

static void read_decoder(const json& j, BpeTokenizer::Parts& p, const std::string& path) {
  for (const json& step : steps_of(j, "decoders")) {
    std::string type = step.value("type", "");
    if (type == "Strip") {
      int64_t start = small_integer(step.value("start", json(0)), path, "Strip start");
      STAPO_CHECK(step.value("content", " ") == " " && start <= 1 &&
                      small_integer(step.value("stop", json(0)), path, "Strip stop") == 0,
                  path, ": only Strip(content=\" \", start<=1, stop=0) is supported");
      p.decode_strips_space = start == 1;
    } else if (type == "Metaspace") {
      p.space_marker = step.value("replacement", std::string("\xE2\x96\x81"));
      p.decode_strips_space = metaspace_scheme(step) != PrependScheme::never;
    } else if (type == "Replace") {
      STAPO_CHECK(step.at("pattern").contains("String") && step.value("content", "") == " ", path,
                  ": only the Replace(marker → \" \") decoder is supported");
      p.space_marker = step["pattern"]["String"].get<std::string>();
    } else if (type == "ByteFallback") {
      p.decode_byte_fallback = true;
    } else if (type != "ByteLevel" && type != "Fuse") {
      fail(path, ": decoder \"", type, "\" is not supported");
    }
  }
}

// The first special token of TemplateProcessing's "single" template, if any (the BOS it prepends).
static std::string template_bos(const json& j) {
  for (const json& step : steps_of(j, "processors")) {
    if (step.value("type", "") != "TemplateProcessing") continue;
    const json& single = step.at("single");
    if (!single.empty() && single[0].contains("SpecialToken")) return single[0]["SpecialToken"].at("id");
  }
  return "";
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path, const std::string& contents,
                                                  const TokenizerConfig& config) {
  json root;
  try {
    root = json::parse(contents);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  STAPO_CHECK(root.is_object(), path, ": not a tokenizer.json (the top level is not an object)");
  BpeTokenizer::Parts p;
  try {
    const json& model = member(root, "model", path);
    STAPO_CHECK(model.value("type", "BPE") == "BPE", path, ": model.type \"", model.value("type", ""),
                "\" is not supported (only BPE)");
    STAPO_CHECK(model.value("dropout", json()).is_null(), path, ": BPE dropout is not supported");
    // "" means none: transformers' GGUF converter writes "", and HF treats it like null.
    auto absent = [&](const char* key) {
      json v = model.value(key, json());
      return v.is_null() || (v.is_string() && v.get<std::string>().empty());
    };
    STAPO_CHECK(absent("continuing_subword_prefix") && absent("end_of_word_suffix"), path,
                ": continuing_subword_prefix / end_of_word_suffix are not supported (only null or \"\")");
    read_normalizers(root.value("normalizer", json()), p, path);
    read_pre_tokenizers(root.value("pre_tokenizer", json()), p, path);
    read_decoder(root.value("decoder", json()), p, path);
    p.ignore_merges = model.value("ignore_merges", false);
    p.byte_fallback = model.value("byte_fallback", false);
    p.fuse_unk = model.value("fuse_unk", false);

    // Vocabulary, in raw bytes for byte-level models.
    for (const auto& [token, id_json] : member(model, "vocab", path).items()) {
      int64_t id = small_integer(id_json, path, "the id of token \"" + token + "\"");
      std::string key = p.byte_level ? byte_level_to_bytes(token, path) : token;
      if (p.tokens.size() <= static_cast<size_t>(id)) p.tokens.resize(id + 1);
      p.tokens[id] = key;
      p.token_ids[key] = static_cast<int32_t>(id);
    }
    for (int b = 0; b < 256; ++b) {
      std::string key = p.byte_level ? std::string(1, static_cast<char>(b)) : cat("<0x", std::hex, std::uppercase,
                                                                                   b < 16 ? "0" : "", b, ">");
      auto it = p.token_ids.find(key);
      if (it != p.token_ids.end()) p.byte_ids[b] = it->second;
    }
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
      auto it = p.token_ids.find(model["unk_token"].get<std::string>());
      STAPO_CHECK(it != p.token_ids.end(), path, ": unk_token \"", model["unk_token"].get<std::string>(),
                  "\" is not in the vocabulary");
      p.unk_id = it->second;
    }

    // Merges: "left right" strings (older files) or [left, right] pairs.
    const json& merges = member(model, "merges", path);
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      std::string left, right;
      if (merges[rank].is_string()) {
        std::string m = merges[rank];
        size_t space = m.find(' ');
        STAPO_CHECK(space != std::string::npos && m.find(' ', space + 1) == std::string::npos, path, ": merge ",
                    rank, " \"", m, "\" is not two tokens separated by one space");
        left = m.substr(0, space);
        right = m.substr(space + 1);
      } else {
        left = merges[rank].at(0);
        right = merges[rank].at(1);
      }
      if (p.byte_level) {
        left = byte_level_to_bytes(left, path);
        right = byte_level_to_bytes(right, path);
      }
      auto l = p.token_ids.find(left), r = p.token_ids.find(right), m = p.token_ids.find(left + right);
      STAPO_CHECK(l != p.token_ids.end() && r != p.token_ids.end() && m != p.token_ids.end(), path, ": merge ",
                  rank, " uses or makes a token missing from the vocabulary");
      p.merges.emplace(static_cast<uint64_t>(l->second) << 32 | static_cast<uint32_t>(r->second),
                       BpeMerge{static_cast<int32_t>(rank), m->second});
    }

    for (const json& added : root.value("added_tokens", json::array())) {
      std::string content = added.at("content");
      int64_t id = small_integer(added.at("id"), path, "the id of added token \"" + content + "\"");
      STAPO_CHECK(!added.value("single_word", false), path, ": added token \"", content,
                  "\" has single_word=true, which is not supported");
      TokenMatcher::Token token{static_cast<int32_t>(id), added.value("special", false), added.value("lstrip", false),
                                added.value("rstrip", false)};
      p.added_matcher.add(content, token);
      p.added_ids[content] = static_cast<int32_t>(id);
      if (p.tokens.size() <= static_cast<size_t>(id)) p.tokens.resize(id + 1);
      p.tokens[id] = content;
      if (p.added.size() <= static_cast<size_t>(id)) p.added.resize(id + 1);
      p.added[id] = true;
    }
    p.added.resize(p.tokens.size());

    std::string template_bos_text = template_bos(root.value("post_processor", json()));
    p.bos_id = find_bos_eos(config.bos_token.empty() ? template_bos_text : config.bos_token, kBosNames, p.added_ids);
    p.eos_id = find_bos_eos(config.eos_token, kEosNames, p.added_ids);
    p.adds_bos = config.add_bos_token.value_or(!template_bos_text.empty());
  } catch (const json::exception& e) {
    fail(path, ": unexpected tokenizer.json structure: ", e.what());
  }
  p.content_hash = content_hash(contents);
  return std::make_unique<BpeTokenizer>(std::move(p));
}

}  // namespace stapo
