// Chat templates as code (no Jinja engine): llama3, llama2, mistral, chatml, plain.
// render() returns the conversation as pieces: literal text, or one special token (by its text), so that
// special tokens are recognised where the template puts them and never inside user-written content.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace stapo {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct TemplatePiece {
  std::string text;
  bool special = false;  // true: exactly one special token whose literal text is `text`
};

class ChatTemplate {
 public:
  // name: llama3 | llama2 | mistral | chatml | plain | auto (recognise tokenizer_config.json's chat_template).
  static ChatTemplate by_name(const std::string& name, const Tokenizer& tokenizer);

  const std::string& name() const { return name_; }
  // The conversation; with add_generation_prompt, the assistant header that starts the next reply.
  std::vector<TemplatePiece> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The text that ends an assistant turn (e.g. "<|eot_id|>", "</s>", "<|im_end|>"); "" for plain.
  const std::string& end_of_turn() const { return end_of_turn_; }
  // Whether render() already starts with the BOS token (then the tokenizer's add-BOS must not apply).
  bool renders_bos() const { return renders_bos_; }

 private:
  std::string name_, end_of_turn_;
  bool renders_bos_ = false;
};

// Concatenated text of the pieces: equals transformers' apply_chat_template(..., tokenize=False).
std::string template_text(const std::vector<TemplatePiece>& pieces);
// Ids of the pieces: text pieces through encode() (no specials), special pieces as their single id
// (a special piece the tokenizer does not know is a stapo::Error naming it).
std::vector<int32_t> encode_pieces(const Tokenizer& tokenizer, const std::vector<TemplatePiece>& pieces);

}  // namespace stapo
