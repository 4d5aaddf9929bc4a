// Chat templates as code. Each render() reproduces, piece by piece, the Jinja template its family ships
// (the exact template strings are in dev/reference/make_tokenizer_fixtures.py, and the test compares our
// text with transformers' apply_chat_template on them):
//   llama3  Meta-Llama-3-*-Instruct: <|begin_of_text|> then per message
//           <|start_header_id|>ROLE<|end_header_id|>\n\n TRIM(CONTENT)<|eot_id|>
//   llama2  Llama-2-*-chat: <s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s> (stripped contents)
//   mistral Mistral-7B-Instruct-v0.2: <s> [INST] (SYS\n\n)USER [/INST] ASSISTANT</s>
//   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n
//   plain   the contents concatenated
// Where a Jinja template raises (roles not alternating) or would silently drop a message, we throw.
#include "tokenizer/chat_template.h"

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace stapo {

// Python's str.strip(): Unicode White_Space plus the ASCII separators U+001C..U+001F.
static std::string python_strip(const std::string& s) {
  auto is_space_at = [&](size_t pos, size_t len) {
    uint32_t cp = utf8_decode(s, pos, len);
    return utf8_is_white_space(cp) || (cp >= 0x1C && cp <= 0x1F);
  };
  size_t begin = 0, end = s.size();
  while (begin < end) {
    size_t len = utf8_char_length(s, begin);
    if (len == 0 || !is_space_at(begin, len)) break;
    begin += len;
  }
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t len = utf8_char_length(s, start);
    if (len != end - start || !is_space_at(start, len)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

namespace {

struct Pieces {
  std::vector<TemplatePiece> list;
  void text(const std::string& t) {  // adjacent text is one piece: it is tokenized as one stretch
    if (t.empty()) return;
    if (!list.empty() && !list.back().special)
      list.back().text += t;
    else
      list.push_back({t, false});
  }
  void special(const std::string& t) { list.push_back({t, true}); }
};

// The [INST] templates: an optional leading system message, then user/assistant alternating.
void check_alternating(const std::vector<ChatMessage>& messages, size_t first, const std::string& name) {
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& expected = (i - first) % 2 == 0 ? "user" : "assistant";
    STAPO_CHECK(messages[i].role == expected, "chat template ", name, ": message ", i, " has role \"",
                messages[i].role, "\" but ", expected, " was expected (after an optional first system message, roles ",
                "must alternate user/assistant)");
  }
}

}  // namespace

ChatTemplate ChatTemplate::by_name(const std::string& name, const Tokenizer& tokenizer) {
  if (name == "auto") {
    const std::string& source = tokenizer.chat_template_source();
    STAPO_CHECK(!source.empty(), "--template auto: the tokenizer has no tokenizer_config.json with a chat_template; "
                "name one of llama3, llama2, mistral, chatml, plain");
    auto has = [&](const char* marker) { return source.find(marker) != std::string::npos; };
    if (has("<|start_header_id|>") && has("<|eot_id|>")) return by_name("llama3", tokenizer);
    if (has("<<SYS>>") && has("[INST]")) return by_name("llama2", tokenizer);
    if (has("[INST]")) return by_name("mistral", tokenizer);
    if (has("<|im_start|>") && has("<|im_end|>")) return by_name("chatml", tokenizer);
    fail("--template auto: the chat_template in tokenizer_config.json is not one we recognise (markers of llama3, ",
         "llama2, mistral, chatml not found); name the template explicitly");
  }
  ChatTemplate t;
  t.name_ = name;
  if (name == "llama3") {
    t.end_of_turn_ = "<|eot_id|>";
    t.renders_bos_ = true;
  } else if (name == "llama2" || name == "mistral") {
    t.end_of_turn_ = "</s>";
    t.renders_bos_ = true;
  } else if (name == "chatml") {
    t.end_of_turn_ = "<|im_end|>";
  } else {
    STAPO_CHECK(name == "plain", "unknown chat template \"", name,
                "\" (known: llama3, llama2, mistral, chatml, plain, auto)");
  }
  return t;
}

std::vector<TemplatePiece> ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt) const {
  Pieces out;
  bool has_system = !messages.empty() && messages[0].role == "system";
  if (name_ == "llama3") {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (i == 0) out.special("<|begin_of_text|>");
      out.special("<|start_header_id|>");
      out.text(messages[i].role);
      out.special("<|end_header_id|>");
      out.text("\n\n" + python_strip(messages[i].content));
      out.special("<|eot_id|>");
    }
    if (add_generation_prompt) {
      out.special("<|start_header_id|>");
      out.text("assistant");
      out.special("<|end_header_id|>");
      out.text("\n\n");
    }
  } else if (name_ == "llama2") {  // no generation prompt: the template has none
    size_t first = has_system ? 1 : 0;
    check_alternating(messages, first, name_);
    for (size_t i = first; i < messages.size(); ++i) {
      std::string content = messages[i].content;
      if (i == first && has_system) content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
      if (messages[i].role == "user") {
        out.special("<s>");
        out.text("[INST] " + python_strip(content) + " [/INST]");
      } else {
        out.text(" " + python_strip(content) + " ");
        out.special("</s>");
      }
    }
  } else if (name_ == "mistral") {  // no generation prompt: the template has none
    size_t first = has_system ? 1 : 0;
    check_alternating(messages, first, name_);
    out.special("<s>");
    for (size_t i = first; i < messages.size(); ++i) {
      if (messages[i].role == "user") {
        std::string system = i == first && has_system ? messages[0].content + "\n\n" : "";
        out.text(" [INST] " + system + messages[i].content + " [/INST]");
      } else {
        out.text(" " + messages[i].content);
        out.special("</s>");
      }
    }
  } else if (name_ == "chatml") {
    for (const ChatMessage& m : messages) {
      out.special("<|im_start|>");
      out.text(m.role + "\n" + m.content);
      out.special("<|im_end|>");
      out.text("\n");
    }
    if (add_generation_prompt) {
      out.special("<|im_start|>");
      out.text("assistant\n");
    }
  } else {
    for (const ChatMessage& m : messages) out.text(m.content);
  }
  return out.list;
}

std::string template_text(const std::vector<TemplatePiece>& pieces) {
  std::string text;
  for (const TemplatePiece& p : pieces) text += p.text;
  return text;
}

std::vector<int32_t> encode_pieces(const Tokenizer& tokenizer, const std::vector<TemplatePiece>& pieces) {
  std::vector<int32_t> ids;
  std::string pending;  // adjacent text pieces are encoded together
  auto flush = [&] {
    std::vector<int32_t> part = tokenizer.encode(pending, false);
    ids.insert(ids.end(), part.begin(), part.end());
    pending.clear();
  };
  for (const TemplatePiece& p : pieces) {
    if (!p.special) {
      pending += p.text;
      continue;
    }
    flush();
    auto id = tokenizer.special_token_id(p.text);
    STAPO_CHECK(id, "the chat template needs the special token \"", p.text,
                "\" but the tokenizer does not have it (wrong template for this tokenizer?)");
    ids.push_back(*id);
  }
  flush();
  return ids;
}

}  // namespace stapo
