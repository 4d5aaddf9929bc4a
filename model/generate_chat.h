// The text side of generation: a conversation → prompt ids (chat template + BOS rule), the ids that end a
// reply, and the reply's text. Shared by ./generate, the demo's evaluation and the trainer's eval samples.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"             // defines: ModelConfig
#include "tokenizer/chat_template.h"  // defines: ChatTemplate, ChatMessage
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

namespace stapo {

// `messages` rendered with the assistant header that starts the next reply; BOS prepended when the
// tokenizer adds one by default and the template does not already render it.
std::vector<int32_t> chat_prompt_ids(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                     const std::vector<ChatMessage>& messages);
// The tokenizer's EOS, the template's end-of-turn token and the config's eos_token_ids, without repeats.
std::vector<int32_t> reply_stop_ids(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                    const ModelConfig& config);

}  // namespace stapo
