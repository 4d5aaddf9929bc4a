// Tokenizers against the reference libraries: every corpus string of tests/fixtures/tokenizer/ must give
// exactly the ids that HF tokenizers / sentencepiece / tiktoken gave (dev/reference/make_tokenizer_fixtures.py),
// for our trained tokenizers and for the real Llama 2 tokenizer.model in ../shared. Plus: decode(encode(s)) == s
// on the corpus and on fresh random UTF-8, invalid UTF-8 and bad files are clear errors, special tokens only
// when allowed.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <thread>

#include "common/error.h"
#include "tests/test_util.h"
#include "tests/tokenizer/fixtures.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using stapo::Tokenizer;
using stapo::test::fixture_path;

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// Compares every corpus string; prints the first mismatches with their text.
::testing::AssertionResult matches_reference(const Tokenizer& tok, const std::vector<std::string>& corpus,
                                             const std::vector<stapo::test::IdsRow>& rows, bool check_special) {
  if (rows.size() != corpus.size())
    return ::testing::AssertionFailure() << rows.size() << " rows of ids for " << corpus.size() << " strings";
  size_t bad = 0;
  std::string report;
  for (size_t i = 0; i < corpus.size(); ++i) {
    std::vector<int32_t> got = tok.encode(corpus[i], false);
    std::vector<int32_t> got_special = check_special ? tok.encode(corpus[i], true) : got;
    const auto& want_special = rows[i].special ? *rows[i].special : rows[i].ids;
    if (got != rows[i].ids || got_special != want_special) {
      if (bad < 5) {
        report += "\n  line " + std::to_string(i + 1) + " " + nlohmann::json(corpus[i]).dump() + "\n    got  " +
                  ids_text(got) + "| special " + ids_text(got_special) + "\n    want " + ids_text(rows[i].ids) +
                  "| special " + ids_text(want_special);
      }
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << corpus.size() << " strings differ" << report;
}

struct Case {
  const char* name;
  bool special_reference;  // the reference library can recognise special tokens in text
  bool round_trip;         // decode(encode(s)) == s holds for the format (see docs/tokenizer.md)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ReferenceIds : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceIds, EveryCorpusStringMatches) {
  auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + GetParam().name));
  auto corpus = stapo::test::read_corpus();
  ASSERT_GE(corpus.size(), 2000u);
  EXPECT_TRUE(matches_reference(*tok, corpus, stapo::test::read_ids(GetParam().name), GetParam().special_reference));
}

::testing::AssertionResult round_trips(const Tokenizer& tok, const std::vector<std::string>& texts) {
  size_t bad = 0;
  std::string report;
  for (const std::string& s : texts) {
    std::string back = tok.decode(tok.encode(s));
    if (back != s) {
      if (bad < 5) report += "\n  " + nlohmann::json(s).dump() + " -> " + nlohmann::json(back).dump();
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << texts.size() << " strings do not round-trip" << report;
}

// Fresh random valid UTF-8: ASCII, Latin, CJK, emoji and whitespace code points, seeded by the test name.
std::vector<std::string> random_texts(size_t n) {
  std::mt19937_64 rng(stapo::test::seed_from_test_name());
  const uint32_t ranges[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x370, 0x4FF}, {0x4E00, 0x9FFF},
                                {0x3040, 0x30FF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1FAFF}, {0x2000, 0x206F}};
  std::vector<std::string> texts;
  for (size_t t = 0; t < n; ++t) {
    std::string s;
    size_t len = rng() % 40;
    for (size_t i = 0; i < len; ++i) {
      const auto& r = ranges[rng() % (sizeof(ranges) / sizeof(ranges[0]))];
      stapo::utf8_append(s, r[0] + static_cast<uint32_t>(rng() % (r[1] - r[0] + 1)));
    }
    texts.push_back(s);
  }
  return texts;
}

TEST_P(ReferenceIds, DecodeInvertsEncode) {
  auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + GetParam().name));
  auto corpus = stapo::test::read_corpus();
  auto texts = random_texts(500);
  if (!GetParam().round_trip) {
    // Metaspace(prepend_scheme=first) gives "x" and " x" the same ids (as HF does): only texts not starting
    // with a space can round-trip there.
    auto no_leading_space = [](std::vector<std::string>& v) {
      v.erase(std::remove_if(v.begin(), v.end(), [](const std::string& s) { return !s.empty() && s[0] == ' '; }),
              v.end());
    };
    no_leading_space(corpus);
    no_leading_space(texts);
  }
  EXPECT_TRUE(round_trips(*tok, corpus));
  EXPECT_TRUE(round_trips(*tok, texts));
}

// Random id sequences (many cutting UTF-8 characters) decode to the reference library's text.
::testing::AssertionResult decodes_like_reference(const Tokenizer& tok, const std::string& name) {
  auto rows = stapo::test::read_jsonl(fixture_path("tokenizer/" + name + ".decode.jsonl"));
  size_t bad = 0;
  std::string report;
  for (const auto& row : rows) {
    std::string got = tok.decode(row.at("ids").get<std::vector<int32_t>>());
    if (got != row.at("text").get<std::string>()) {
      if (bad < 5) report += "\n  ids " + row.at("ids").dump() + "\n    got  " + nlohmann::json(got).dump() +
                             "\n    want " + row.at("text").dump();
      ++bad;
    }
  }
  if (rows.size() >= 300 && bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << rows.size() << " id sequences decode differently" << report;
}

TEST_P(ReferenceIds, DecodeMatchesReference) {
  auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + GetParam().name));
  EXPECT_TRUE(decodes_like_reference(*tok, GetParam().name));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ReferenceIds,
                         ::testing::Values(Case{"bl_llama3", true, true}, Case{"bl_gpt2", true, true},
                                           Case{"sp_legacy", true, true}, Case{"sp_metaspace", true, false},
                                           Case{"sp_model", false, true}, Case{"tiktoken", true, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// remove_extra_whitespaces=true changes the text by design, so it is checked on ids only.
TEST(ReferenceIdsClean, SentencePieceWithWhitespaceCleanupMatches) {
  auto tok = Tokenizer::load(fixture_path("tokenizer/sp_model_clean"));
  auto corpus = stapo::test::read_corpus();
  EXPECT_TRUE(matches_reference(*tok, corpus, stapo::test::read_ids("sp_model_clean"), false));
  EXPECT_TRUE(decodes_like_reference(*tok, "sp_model_clean"));
  EXPECT_EQ(tok->decode(tok->encode("  two   spaces  ")), "two spaces");
}

TEST(Llama2Real, SameIdsAsSentencePiece) {
  STAPO_REQUIRE_SHARED(model, "tokenizers/llama2/tokenizer.model");
  auto tok = Tokenizer::load(model);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->adds_bos_by_default());
  auto corpus = stapo::test::read_corpus();
  EXPECT_TRUE(matches_reference(*tok, corpus, stapo::test::read_ids("llama2_real"), false));
  EXPECT_TRUE(decodes_like_reference(*tok, "llama2_real"));
  EXPECT_TRUE(round_trips(*tok, corpus));
  EXPECT_TRUE(round_trips(*tok, random_texts(500)));
}

// The data pipeline shares one tokenizer between threads: the word cache must not mix results up.
TEST(Tokenizer, ConcurrentEncodeMatchesSequential) {
  auto corpus = stapo::test::read_corpus();
  for (const char* name : {"bl_llama3", "sp_model"}) {
    auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + name));
    auto want = stapo::test::read_ids(name);
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (size_t k = 0; k < corpus.size(); ++k) {
          size_t i = (k * 7 + t * 613) % corpus.size();  // each thread its own order
          if (tok->encode(corpus[i]) != want[i].ids) ++bad[t];
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << name << " thread " << t;
  }
}

TEST(Tokenizer, InvalidUtf8IsAnErrorNamingTheOffset) {
  for (const char* name : {"bl_llama3", "sp_legacy", "sp_model", "tiktoken"}) {
    auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + name));
    for (std::string bad : {std::string("abc\xFF"), std::string("abc\xC0\xAF"), std::string("abc\xED\xA0\x80"),
                            std::string("abc\xE4\xB8"), std::string("abc\xF4\x90\x80\x80")}) {
      try {
        tok->encode(bad);
        ADD_FAILURE() << name << ": no error for invalid UTF-8 " << bad.size() << " bytes";
      } catch (const stapo::Error& e) {
        EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
      }
    }
  }
}

TEST(Tokenizer, SpecialTokensOnlyWhenAllowed) {
  auto tok = Tokenizer::load(fixture_path("tokenizer/bl_llama3"));
  auto eot = tok->special_token_id("<|eot_id|>");
  ASSERT_TRUE(eot);
  std::string text = "before<|eot_id|>after";
  auto plain = tok->encode(text, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), *eot), 0);
  EXPECT_EQ(tok->decode(plain), text);
  auto special = tok->encode(text, true);
  EXPECT_EQ(std::count(special.begin(), special.end(), *eot), 1);
  EXPECT_EQ(tok->decode(special), text);
  EXPECT_FALSE(tok->special_token_id("<|not_a_token|>"));

  // sentencepiece control pieces: plain text unless allowed.
  auto sp = Tokenizer::load(fixture_path("tokenizer/sp_model"));
  auto ids = sp->encode("<s>hi</s>", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), sp->bos_id()), 0);
  ids = sp->encode("<s>hi</s>", true);
  EXPECT_EQ(ids.front(), sp->bos_id());
  EXPECT_EQ(ids.back(), sp->eos_id());
}

TEST(Tokenizer, BosEosAndHashes) {
  auto llama3 = Tokenizer::load(fixture_path("tokenizer/bl_llama3"));
  EXPECT_EQ(llama3->bos_id(), *llama3->special_token_id("<|begin_of_text|>"));
  EXPECT_EQ(llama3->eos_id(), *llama3->special_token_id("<|eot_id|>"));  // tokenizer_config.json's eos_token
  EXPECT_TRUE(llama3->adds_bos_by_default());
  auto gpt2 = Tokenizer::load(fixture_path("tokenizer/bl_gpt2"));
  EXPECT_FALSE(gpt2->adds_bos_by_default());
  auto tiktoken = Tokenizer::load(fixture_path("tokenizer/tiktoken/tokenizer.model"));
  EXPECT_EQ(tiktoken->bos_id(), *tiktoken->special_token_id("<|begin_of_text|>"));
  EXPECT_EQ(tiktoken->vocab_size(), *tiktoken->special_token_id("<|begin_of_text|>") + 256);
  auto sp = Tokenizer::load(fixture_path("tokenizer/sp_model/tokenizer.model"));
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
  EXPECT_EQ(llama3->content_hash().size(), 16u);
  EXPECT_EQ(llama3->content_hash(), Tokenizer::load(fixture_path("tokenizer/bl_llama3/tokenizer.json"))->content_hash());
  EXPECT_NE(llama3->content_hash(), gpt2->content_hash());
  EXPECT_NE(llama3->content_hash(), tiktoken->content_hash());
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  for (const char* name : {"bl_llama3", "sp_model"}) {
    auto tok = Tokenizer::load(fixture_path(std::string("tokenizer/") + name));
    EXPECT_THROW(tok->decode({0, tok->vocab_size()}), stapo::Error);
    EXPECT_THROW(tok->decode({-1}), stapo::Error);
  }
}

void expect_load_error(const std::string& path, const std::string& needle) {
  try {
    Tokenizer::load(path);
    ADD_FAILURE() << "no error loading " << path;
  } catch (const stapo::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.substr(path.rfind('/') + 1)), std::string::npos) << e.what();
  }
}

// A file in a folder of its own (so no stray tokenizer_config.json is picked up).
std::string temp_file(const std::string& name, const std::string& contents) {
  std::string dir = ::testing::TempDir() + "/stapo_tokenizer_" + std::to_string(stapo::test::seed_from_test_name());
  stapo::make_directories(dir);
  std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

// tokenizers >= 0.20 writes merges as [left, right] pairs (our fixtures); older files as "left right".
TEST(Tokenizer, MergesWrittenAsStringsGiveTheSameIds) {
  auto spec = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/bl_llama3/tokenizer.json")));
  ASSERT_TRUE(spec["model"]["merges"][0].is_array());
  for (auto& merge : spec["model"]["merges"]) merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  auto tok = Tokenizer::load(temp_file("string_merges.json", spec.dump()));
  auto corpus = stapo::test::read_corpus();
  EXPECT_TRUE(matches_reference(*tok, corpus, stapo::test::read_ids("bl_llama3"), true));
}

// transformers' GGUF converter writes "" for the two BPE affixes; HF reads "" as none, and so do we.
TEST(Tokenizer, EmptySubwordAffixesMeanNone) {
  auto spec = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/bl_gpt2/tokenizer.json")));
  spec["model"]["continuing_subword_prefix"] = "";
  spec["model"]["end_of_word_suffix"] = "";
  auto tok = Tokenizer::load(temp_file("empty_affixes.json", spec.dump()));
  EXPECT_TRUE(matches_reference(*tok, stapo::test::read_corpus(), stapo::test::read_ids("bl_gpt2"), true));
  spec["model"]["continuing_subword_prefix"] = "##";
  expect_load_error(temp_file("prefix.json", spec.dump()), "continuing_subword_prefix / end_of_word_suffix");
}

// Pre-tokenizer and normalizer variants (Split behaviours, invert, String patterns, ByteLevel prefix space,
// Metaspace schemes, Replace alone) swapped into the committed files, against tokenizers' ids.
TEST(Tokenizer, PipelineVariantsMatchTokenizers) {
  auto variants = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/variants.json")));
  auto corpus = stapo::test::read_corpus();
  ASSERT_GE(variants.size(), 10u);
  int index = 0;
  for (const auto& v : variants) {
    std::string base = v.at("base");
    auto spec = nlohmann::json::parse(stapo::read_text_file(fixture_path("tokenizer/" + base + "/tokenizer.json")));
    spec[v.at("key").get<std::string>()] = v.at("value");
    auto tok = Tokenizer::load(temp_file("variant" + std::to_string(index++) + ".json", spec.dump()));
    const auto& ids = v.at("ids");
    std::vector<stapo::test::IdsRow> want;
    for (const auto& row : ids) want.push_back({row.get<std::vector<int32_t>>(), std::nullopt});
    std::vector<std::string> texts(corpus.begin(), corpus.begin() + want.size());
    EXPECT_TRUE(matches_reference(*tok, texts, want, false)) << base << " with " << v.at("value").dump();
  }
}

TEST(Tokenizer, BadFilesAreClearErrors) {
  std::string json = stapo::read_text_file(fixture_path("tokenizer/bl_llama3/tokenizer.json"));
  expect_load_error(temp_file("truncated.json", json.substr(0, json.size() / 2)), "not valid JSON");
  auto unigram = nlohmann::json::parse(json);
  unigram["model"]["type"] = "Unigram";
  expect_load_error(temp_file("unigram.json", unigram.dump()), "only BPE");
  auto bad_merge = nlohmann::json::parse(json);
  bad_merge["model"]["merges"][0] = "nosuchtoken x";
  expect_load_error(temp_file("bad_merge.json", bad_merge.dump()), "merge 0");

  std::string model = stapo::read_text_file(fixture_path("tokenizer/sp_model/tokenizer.model"));
  expect_load_error(temp_file("truncated.model", model.substr(0, model.size() / 3)), "truncated");

  std::string tiktoken = stapo::read_text_file(fixture_path("tokenizer/tiktoken/tokenizer.model"));
  expect_load_error(temp_file("tiktoken.model", tiktoken + "!!notbase64 12\n"), "expected \"<base64 token> <rank>\"");
  expect_load_error("/nonexistent/tokenizer.json", "does not exist");
}

}  // namespace
