// Reading the tokenizer fixtures written by dev/reference/make_tokenizer_fixtures.py.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "tests/test_util.h"

namespace stapo::test {

struct IdsRow {
  std::vector<int32_t> ids;                     // special tokens in the text are plain text
  std::optional<std::vector<int32_t>> special;  // with special tokens recognised, when that differs
};

inline std::vector<std::string> read_corpus() {
  std::vector<std::string> corpus;
  for (const auto& row : read_jsonl(fixture_path("tokenizer/corpus.jsonl"))) corpus.push_back(row.get<std::string>());
  return corpus;
}

inline std::vector<IdsRow> read_ids(const std::string& name) {
  std::vector<IdsRow> rows;
  for (const auto& row : read_jsonl(fixture_path("tokenizer/" + name + ".ids.jsonl"))) {
    IdsRow r{row.at("ids").get<std::vector<int32_t>>(), std::nullopt};
    if (row.contains("special")) r.special = row["special"].get<std::vector<int32_t>>();
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace stapo::test
