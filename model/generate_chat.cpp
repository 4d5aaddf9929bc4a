// Prompt ids and stop ids for generation from a conversation (see generate_chat.h).
#include "model/generate_chat.h"

#include <algorithm>

#include "common/error.h"

namespace stapo {

std::vector<int32_t> chat_prompt_ids(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                     const std::vector<ChatMessage>& messages) {
  std::vector<int32_t> ids;
  if (tokenizer.adds_bos_by_default() && !chat_template.renders_bos()) {
    STAPO_CHECK(tokenizer.bos_id() >= 0, "the tokenizer adds BOS by default but has no BOS token");
    ids.push_back(tokenizer.bos_id());
  }
  std::vector<int32_t> rendered = encode_pieces(tokenizer, chat_template.render(messages, true));
  ids.insert(ids.end(), rendered.begin(), rendered.end());
  return ids;
}

std::vector<int32_t> reply_stop_ids(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                    const ModelConfig& config) {
  std::vector<int32_t> ids = config.eos_token_ids;
  if (tokenizer.eos_id() >= 0) ids.push_back(tokenizer.eos_id());
  if (!chat_template.end_of_turn().empty()) {
    auto id = tokenizer.special_token_id(chat_template.end_of_turn());
    STAPO_CHECK(id.has_value(), "the ", chat_template.name(), " template ends a turn with ",
                chat_template.end_of_turn(), " but the tokenizer has no such special token");
    ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace stapo
