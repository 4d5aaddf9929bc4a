#include "data/prepare.h"

#include "common/error.h"
#include "data/pair_tokenize.h"
#include "data/shard.h"

namespace stapo {

std::string PrepareStats::report() const {
  std::string out = cat("pairs read      ", input.read, "\npairs written   ", written, " (", tokens, " tokens)\n",
                        "pairs truncated ", truncated, " (prompt cut in ", prompts_truncated, ", responses cut in ",
                        responses_truncated, ")\npairs skipped   ", input.skipped_total(), "\n");
  for (const auto& [reason, count] : input.skipped) out += cat("  ", reason, ": ", count, "\n");
  return out;
}

PrepareStats prepare_data(const Tokenizer& tokenizer, const ChatTemplate& chat_template, const PrepareConfig& config) {
  truncation_check(config.truncation);
  STAPO_CHECK(!config.inputs.empty(), "no input files (--in)");
  PairTokenizer pair_tokenizer(tokenizer, chat_template);
  PrepareStats stats;
  std::vector<TokenizedPair> pairs;
  TokenizedPair pair;
  for (const std::string& path : config.inputs) {
    preference_file_read(path, config.skip_bad, stats.input, [&](int64_t line, const PreferenceRecord& record) {
      if (auto problem = pair_tokenizer.tokenize(record, pair)) {
        STAPO_CHECK(config.skip_bad, line_problem_message(path, line, *problem));
        ++stats.input.skipped[problem->reason];
        return int64_t{0};
      }
      TruncationResult cut = truncate_pair(pair.prompt, pair.chosen, pair.rejected, config.truncation,
                                           pair_tokenizer.starts_with_bos(pair.prompt));
      if (!cut.skip_reason.empty()) {  // never an error: the flags, not the line, leave no room
        ++stats.input.skipped[cut.skip_reason];
        return int64_t{0};
      }
      stats.prompts_truncated += cut.prompt_truncated;
      stats.responses_truncated += cut.responses_truncated;
      stats.truncated += cut.prompt_truncated || cut.responses_truncated;
      auto tokens = static_cast<int64_t>(pair.prompt.size() + pair.chosen.size() + pair.rejected.size());
      stats.tokens += tokens;
      pairs.push_back(std::move(pair));
      pair = TokenizedPair{};
      return tokens;
    });
  }
  stats.written = static_cast<int64_t>(pairs.size());
  STAPO_CHECK(!pairs.empty(), "no pair survived, nothing written to ", config.output, ":\n", stats.report());

  ShardInfo info;
  info.tokenizer_hash = tokenizer.content_hash();
  info.template_name = chat_template.name();
  info.vocab_size = tokenizer.vocab_size();
  info.truncation = config.truncation;
  info.pairs_read = stats.input.read;
  info.pairs_skipped = stats.input.skipped_total();
  info.pairs_truncated = stats.truncated;
  shard_write(config.output, info, pairs);
  return stats;
}

}  // namespace stapo
