// Chat templates. "auto" renders the model's own Jinja template (tokenizer/jinja.h) with the variables
// transformers gives it; message contents are data, so special-token text in them stays text.
// The families as code: each render() reproduces, piece by piece, the Jinja template its family ships (the
// exact template strings are in dev/reference/make_tokenizer_fixtures.py, and the test compares our text with
// transformers' apply_chat_template on them):
//   llama3  Meta-Llama-3-*-Instruct: <|begin_of_text|> then per message
//           <|start_header_id|>ROLE<|end_header_id|>\n\n TRIM(CONTENT)<|eot_id|>
//   llama2  Llama-2-*-chat: <s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s> (stripped contents)
//   mistral Mistral-7B-Instruct-v0.2: <s> [INST] (SYS\n\n)USER [/INST] ASSISTANT</s>
//   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n
//   plain   the contents concatenated
// Where a Jinja template raises (roles not alternating) or would silently drop a message, we throw.
#include "tokenizer/chat_template.h"

#include "common/error.h"

namespace stapo {

using jinja::python_strip;

namespace {

struct Pieces {
  std::vector<TemplatePiece> list;
  void add(const std::string& t, TemplatePiece::Kind kind) {  // adjacent pieces of one kind join
    if (t.empty()) return;
    if (!list.empty() && list.back().kind == kind && kind != TemplatePiece::Kind::special_token)
      list.back().text += t;
    else
      list.push_back({t, kind});
  }
  void text(const std::string& t) { add(t, TemplatePiece::Kind::text); }
  void special(const std::string& t) { add(t, TemplatePiece::Kind::special_token); }
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

// The first special token in `text` (the leftmost, longest there), or "".
std::string first_special_token(const Tokenizer& tokenizer, const std::string& text) {
  for (size_t pos = 0; pos < text.size(); ++pos)
    for (size_t len = std::min<size_t>(text.size() - pos, 256); len > 0; --len)
      if (tokenizer.special_token_id(std::string_view(text).substr(pos, len))) return text.substr(pos, len);
  return "";
}

}  // namespace

ChatTemplate ChatTemplate::by_name(const std::string& name, const Tokenizer& tokenizer) {
  ChatTemplate t;
  if (name == "auto") {
    const TokenizerConfig& config = tokenizer.config();
    STAPO_CHECK(!config.chat_template.empty(), "--template auto: the tokenizer has no chat template (no "
                "chat_template.jinja beside it and no chat_template in tokenizer_config.json); name one of llama3, "
                "llama2, mistral, chatml, plain");
    t.name_ = "model";
    t.jinja_ = std::make_shared<jinja::Template>(config.chat_template, config.chat_template_origin);
    for (auto [key, value] : {std::pair{"bos_token", &config.bos_token}, {"eos_token", &config.eos_token},
                              {"unk_token", &config.unk_token}, {"pad_token", &config.pad_token}})
      if (!value->empty()) t.special_tokens_.emplace_back(key, jinja::Value::from_text(*value, false));
    // What the template does, learnt from two renderings: whether the prompt starts with BOS, and the first
    // special token the template writes after an assistant reply (its end of turn).
    const std::string reply = "stapo";
    try {
      std::vector<TemplatePiece> prompt = t.render({{"user", "Hello"}}, true);
      std::vector<int32_t> prompt_ids = encode_pieces(tokenizer, prompt);
      t.renders_bos_ = tokenizer.bos_id() >= 0 && !prompt_ids.empty() && prompt_ids[0] == tokenizer.bos_id();
      std::vector<TemplatePiece> full = t.render({{"user", "Hello"}, {"assistant", reply}}, false);
      const std::string prompt_text = template_text(prompt), full_text = template_text(full);
      size_t reply_at = full_text.compare(0, prompt_text.size(), prompt_text) == 0
                            ? full_text.find(reply, prompt_text.size())
                            : std::string::npos;
      if (reply_at != std::string::npos) {
        std::string markup_after;  // the template's own text after the reply
        size_t offset = 0;
        for (const TemplatePiece& p : full) {
          if (offset + p.text.size() > reply_at + reply.size() && p.kind == TemplatePiece::Kind::markup)
            markup_after += offset >= reply_at + reply.size() ? p.text : p.text.substr(reply_at + reply.size() - offset);
          offset += p.text.size();
        }
        t.end_of_turn_ = first_special_token(tokenizer, markup_after);
      }
    } catch (const Error& e) {
      fail(config.chat_template_origin, ": rendering a one-turn conversation (to learn the template's BOS and end of ",
           "turn) failed: ", e.what());
    }
    return t;
  }
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
  if (jinja_) {  // the variables transformers' apply_chat_template gives the template
    jinja::List list;
    for (const ChatMessage& m : messages)
      list.push_back(jinja::Value::from_dict({{"role", jinja::Value::from_text(m.role, true)},
                                              {"content", jinja::Value::from_text(m.content, true)}}));
    jinja::Dict variables = special_tokens_;
    variables.emplace_back("messages", jinja::Value::from_list(std::move(list)));
    variables.emplace_back("tools", jinja::Value::none());
    variables.emplace_back("documents", jinja::Value::none());
    variables.emplace_back("add_generation_prompt", jinja::Value::from_bool(add_generation_prompt));
    for (const auto& [text, data] : jinja_->render(variables).runs())
      out.add(text, data ? TemplatePiece::Kind::text : TemplatePiece::Kind::markup);
    return out.list;
  }
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
  std::string text;
  SpecialRanges specials;
  for (const TemplatePiece& p : pieces) {
    if (p.kind == TemplatePiece::Kind::special_token)
      STAPO_CHECK(tokenizer.special_token_id(p.text), "the chat template needs the special token \"", p.text,
                  "\" but the tokenizer does not have it (wrong template for this tokenizer?)");
    if (p.kind != TemplatePiece::Kind::text) specials.emplace_back(text.size(), text.size() + p.text.size());
    text += p.text;
  }
  return tokenizer.encode_with_special_ranges(text, specials);
}

}  // namespace stapo
