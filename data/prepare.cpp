#include "data/prepare.h"

#include <exception>
#include <optional>

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

namespace {

// Records wait here until a chunk is full, are tokenized in parallel (the tokenizer is thread-safe), then
// truncated and counted in line order, so the output and the counts do not depend on the thread count.
constexpr size_t kChunkRecords = 2048;

struct PendingRecord {
  int64_t line;
  PreferenceRecord record;
};

}  // namespace

PrepareStats prepare_data(const Tokenizer& tokenizer, const ChatTemplate& chat_template, const PrepareConfig& config) {
  truncation_check(config.truncation);
  STAPO_CHECK(!config.inputs.empty(), "no input files (--in)");
  PairTokenizer pair_tokenizer(tokenizer, chat_template);
  PrepareStats stats;
  ShardWriter writer(config.output, tokenizer.vocab_size());  // pairs stream to disk as they are tokenized
  std::vector<PendingRecord> pending;

  auto flush = [&](const std::string& path) -> int64_t {
    auto n = static_cast<int64_t>(pending.size());
    std::vector<TokenizedPair> tokenized(pending.size());
    std::vector<std::optional<LineProblem>> problems(pending.size());
    std::vector<std::exception_ptr> errors(pending.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i) {
      try {
        problems[i] = pair_tokenizer.tokenize(pending[i].record, tokenized[i]);
      } catch (const Error& e) {  // e.g. roles the template cannot render: a bad line like any other
        problems[i] = LineProblem{"template rejects the conversation", "prompt", e.what()};
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
    int64_t tokens = 0;
    for (size_t i = 0; i < pending.size(); ++i) {
      if (errors[i]) std::rethrow_exception(errors[i]);
      if (problems[i]) {
        STAPO_CHECK(config.skip_bad, line_problem_message(path, pending[i].line, *problems[i]));
        ++stats.input.skipped[problems[i]->reason];
        continue;
      }
      TokenizedPair& pair = tokenized[i];
      TruncationResult cut = truncate_pair(pair.prompt, pair.chosen, pair.rejected, config.truncation,
                                           pair_tokenizer.starts_with_bos(pair.prompt));
      if (!cut.skip_reason.empty()) {  // never an error: the flags, not the line, leave no room
        ++stats.input.skipped[cut.skip_reason];
        continue;
      }
      stats.prompts_truncated += cut.prompt_truncated;
      stats.responses_truncated += cut.responses_truncated;
      stats.truncated += cut.prompt_truncated || cut.responses_truncated;
      tokens += static_cast<int64_t>(pair.prompt.size() + pair.chosen.size() + pair.rejected.size());
      writer.add(pair);
    }
    stats.tokens += tokens;
    pending.clear();
    return tokens;
  };

  for (const std::string& path : config.inputs) {
    preference_file_read(
        path, config.skip_bad, stats.input,
        [&](int64_t line, const PreferenceRecord& record) {
          pending.push_back({line, record});
          return pending.size() >= kChunkRecords ? flush(path) : int64_t{0};
        },
        [&] { return flush(path); });
  }
  stats.written = writer.num_pairs();
  STAPO_CHECK(stats.written > 0, "no pair survived, nothing written to ", config.output, ":\n", stats.report());

  ShardInfo info;
  info.tokenizer_hash = tokenizer.content_hash();
  info.template_name = chat_template.name();
  info.vocab_size = tokenizer.vocab_size();
  info.truncation = config.truncation;
  info.pairs_read = stats.input.read;
  info.pairs_skipped = stats.input.skipped_total();
  info.pairs_truncated = stats.truncated;
  writer.finish(info);
  return stats;
}

}  // namespace stapo
