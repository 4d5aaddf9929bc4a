// Chat templates: the model's own Jinja template (tokenizer/jinja.h), or one of the families as code (llama3,
// llama2, mistral, chatml, plain). render() returns the conversation as pieces that say where special tokens may
// be: in the template's own text, never inside message contents (docs/tokenizer.md, "Chat templates").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace stapo {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct TemplatePiece {
  enum class Kind {
    text,           // plain text: special-token text in it stays text (message contents, family template text)
    special_token,  // exactly one special token, by its text (the family templates)
    markup,         // the Jinja template's own text: the tokenizer's special tokens in it become their ids
  };
  std::string text;
  Kind kind = Kind::text;
};

class ChatTemplate {
 public:
  // name: auto (the model's own template: chat_template.jinja, else tokenizer_config.json's chat_template,
  // rendered by the Jinja interpreter; an error when the tokenizer has none) | llama3 | llama2 | mistral |
  // chatml | plain (the families as code).
  static ChatTemplate by_name(const std::string& name, const Tokenizer& tokenizer);

  // The family's name, or "model" for the model's own template.
  const std::string& name() const { return name_; }
  // The conversation; with add_generation_prompt, the assistant header that starts the next reply.
  std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The special token that ends an assistant turn (e.g. "<|eot_id|>", "</s>", "<|im_end|>"); "" when there is
  // none (plain, or a model template that writes no special token after a reply): then the tokenizer's EOS.
  const std::string& end_of_turn() const { return end_of_turn_; }
  // Whether render() already starts with the BOS token (then the tokenizer's add-BOS must not apply).
  bool renders_bos() const { return renders_bos_; }

 private:
  std::string name_, end_of_turn_;
  bool renders_bos_ = false;
  std::shared_ptr<const jinja::Template> jinja_;  // the model's own template
  jinja::Dict special_tokens_;                    // bos_token, eos_token, ... as its Jinja sees them
};

// Concatenated text of the pieces: equals transformers' apply_chat_template(..., tokenize=False).
std::string template_text(const std::vector<TemplatePiece>& pieces);
// Ids of the pieces: the text encoded as one string (as transformers tokenizes a rendering), with special
// tokens recognised only inside special_token and markup pieces. A special_token piece the tokenizer does not
// know is a stapo::Error naming it.
std::vector<int32_t> encode_pieces(const Tokenizer& tokenizer, const std::vector<TemplatePiece>& pieces);

}  // namespace stapo
