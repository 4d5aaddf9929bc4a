#include "data/pair_tokenize.h"

#include "common/error.h"

namespace stapo {

PairTokenizer::PairTokenizer(const Tokenizer& tokenizer, const ChatTemplate& chat_template)
    : tokenizer_(tokenizer), template_(chat_template), bos_id_(tokenizer.bos_id()) {
  add_bos_ = !chat_template.renders_bos() && tokenizer.adds_bos_by_default() && bos_id_ >= 0;
  const std::string& end_of_turn = chat_template.end_of_turn();
  if (end_of_turn.empty()) {
    end_of_turn_id_ = tokenizer.eos_id();
    STAPO_CHECK(end_of_turn_id_ >= 0, "template ", chat_template.name(),
                " has no end-of-turn token and the tokenizer has no EOS, so responses could not end; "
                "pick a template with an end-of-turn token");
  } else {
    auto id = tokenizer.special_token_id(end_of_turn);
    STAPO_CHECK(id.has_value(), "template ", chat_template.name(), " ends a turn with '", end_of_turn,
                "', which this tokenizer does not have as a special token; pick the template that matches the "
                "tokenizer (or --template auto)");
    end_of_turn_id_ = *id;
  }
}

std::optional<LineProblem> PairTokenizer::tokenize(const PreferenceRecord& record, TokenizedPair& out) const {
  out.id = record.id;
  out.prompt.clear();
  if (add_bos_) out.prompt.push_back(bos_id_);
  std::vector<int32_t> rendered = encode_pieces(tokenizer_, template_.render(record.prompt, true));
  out.prompt.insert(out.prompt.end(), rendered.begin(), rendered.end());
  if (out.prompt.empty())
    return LineProblem{"empty prompt", "prompt",
                       "renders to no tokens and the tokenizer adds no BOS, so the first response token has "
                       "nothing to be predicted from"};
  STAPO_CHECK(!(out.prompt.size() >= 2 && out.prompt[0] == bos_id_ && out.prompt[1] == bos_id_),
              "template ", template_.name(), " and the tokenizer both put a BOS first (a bug in the template's "
              "renders_bos)");
  for (auto [content, ids] : {std::pair{&record.chosen, &out.chosen}, std::pair{&record.rejected, &out.rejected}}) {
    *ids = tokenizer_.encode(*content);
    ids->push_back(end_of_turn_id_);
  }
  return std::nullopt;
}

}  // namespace stapo
