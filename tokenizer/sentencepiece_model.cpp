// SentencePiece tokenizer.model (a protobuf ModelProto, BPE type) and its encoder, following the
// `sentencepiece` library: normalize (identity rules: dummy ▁ prefix, optional whitespace cleanup, spaces as
// ▁), split into characters (user-defined symbols whole), merge the adjacent pair whose merged piece has the
// highest score (leftmost on ties), then map pieces to ids: unknown → byte pieces <0xXX> with byte fallback,
// else one unk per run. Only the fields used here are read from the protobuf; the wire format is
// varint / fixed32 / fixed64 / length-delimited, so unknown fields are skipped safely.
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "common/error.h"
#include "tokenizer/bpe_merge.h"
#include "tokenizer/token_matcher.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/utf8.h"

namespace stapo {

namespace {

// Protobuf wire-format reader over one message's bytes.
class ProtoReader {
 public:
  ProtoReader(std::string_view bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  bool next(uint32_t* field, uint32_t* wire_type) {
    if (pos_ >= bytes_.size()) return false;
    uint64_t key = varint();
    *field = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    return true;
  }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      STAPO_CHECK(pos_ < bytes_.size(), path_, ": truncated protobuf (not a SentencePiece model?)");
      uint8_t b = static_cast<uint8_t>(bytes_[pos_++]);
      value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return value;
    }
    fail(path_, ": malformed protobuf varint (not a SentencePiece model?)");
  }
  std::string_view bytes() {
    uint64_t len = varint();
    STAPO_CHECK(len <= bytes_.size() - pos_, path_, ": truncated protobuf field (not a SentencePiece model?)");
    std::string_view out = bytes_.substr(pos_, len);
    pos_ += len;
    return out;
  }
  float fixed32_float() {
    STAPO_CHECK(bytes_.size() - pos_ >= 4, path_, ": truncated protobuf float");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    pos_ += 4;
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
  }
  void skip(uint32_t wire_type) {
    if (wire_type == 0) {
      varint();
    } else if (wire_type == 2) {
      bytes();
    } else if (wire_type == 1 || wire_type == 5) {
      size_t n = wire_type == 1 ? 8 : 4;
      STAPO_CHECK(bytes_.size() - pos_ >= n, path_, ": truncated protobuf field");
      pos_ += n;
    } else {
      fail(path_, ": unsupported protobuf wire type ", wire_type, " (not a SentencePiece model?)");
    }
  }

 private:
  std::string_view bytes_;
  const std::string& path_;
  size_t pos_ = 0;
};

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const std::string& contents, const TokenizerConfig& config);

  std::vector<int32_t> encode_with_special_ranges(std::string_view text,
                                                  const SpecialRanges& special_ranges) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> special_token_id(std::string_view text) const override {
    auto it = special_ids_.find(std::string(text));
    if (it == special_ids_.end()) return std::nullopt;
    return it->second;
  }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  bool adds_bos_by_default() const override { return adds_bos_; }
  std::string content_hash() const override { return hash_; }

 private:
  std::string normalize(std::string_view text) const;
  void encode_normalized(const std::string& normalized, std::vector<int32_t>& out) const;

  std::vector<Piece> pieces_;
  // Normal, user-defined and unused pieces (what BPE merges into), keyed by views of pieces_[id].text.
  std::unordered_map<std::string_view, int32_t> piece_ids_;
  std::unordered_map<std::string, int32_t> special_ids_;  // control + user-defined, by text
  TokenMatcher user_defined_, controls_;
  int32_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1;
  int32_t byte_ids_[256];
  bool byte_fallback_ = false, add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
  bool adds_bos_ = true;
  std::string hash_;
};

const std::string kSpace = "\xE2\x96\x81";  // ▁

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path, const std::string& contents,
                                               const TokenizerConfig& config) {
  std::fill(byte_ids_, byte_ids_ + 256, -1);
  int model_type = 1;  // protobuf default: UNIGRAM
  std::string bos_piece = "<s>", eos_piece = "</s>";
  bool whitespace_as_suffix = false;
  std::string_view charsmap;
  ProtoReader model(contents, path);
  uint32_t field, wire;
  while (model.next(&field, &wire)) {
    if (field == 1 && wire == 2) {  // SentencePiece
      ProtoReader r(model.bytes(), path);
      Piece piece;
      while (r.next(&field, &wire)) {
        if (field == 1 && wire == 2) piece.text = std::string(r.bytes());
        else if (field == 2 && wire == 5) piece.score = r.fixed32_float();
        else if (field == 3 && wire == 0) piece.type = static_cast<int>(r.varint());
        else r.skip(wire);
      }
      pieces_.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      ProtoReader r(model.bytes(), path);
      while (r.next(&field, &wire)) {
        if (field == 3 && wire == 0) model_type = static_cast<int>(r.varint());
        else if (field == 35 && wire == 0) byte_fallback_ = r.varint() != 0;
        else if (field == 24 && wire == 0) whitespace_as_suffix = r.varint() != 0;
        else if (field == 46 && wire == 2) bos_piece = std::string(r.bytes());
        else if (field == 47 && wire == 2) eos_piece = std::string(r.bytes());
        else r.skip(wire);
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      ProtoReader r(model.bytes(), path);
      while (r.next(&field, &wire)) {
        if (field == 2 && wire == 2) charsmap = r.bytes();
        else if (field == 3 && wire == 0) add_dummy_prefix_ = r.varint() != 0;
        else if (field == 4 && wire == 0) remove_extra_whitespaces_ = r.varint() != 0;
        else if (field == 5 && wire == 0) escape_whitespaces_ = r.varint() != 0;
        else r.skip(wire);
      }
    } else {
      model.skip(wire);
    }
  }
  STAPO_CHECK(!pieces_.empty(), path, ": no pieces (not a SentencePiece model?)");
  STAPO_CHECK(model_type == 2, path, ": SentencePiece model type ", model_type,
              " is not supported (only BPE = 2; Unigram models are not)");
  STAPO_CHECK(charsmap.empty(), path, ": the normalizer has a precompiled character map (e.g. nmt_nfkc), which is "
              "not supported; only the identity normalizer (Llama 2, Mistral) is");
  STAPO_CHECK(!whitespace_as_suffix, path, ": treat_whitespace_as_suffix is not supported");

  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& piece = pieces_[i];
    int32_t id = static_cast<int32_t>(i);
    STAPO_CHECK(piece.type >= kNormal && piece.type <= kByte, path, ": piece ", i, " has unknown type ", piece.type);
    STAPO_CHECK(!std::isnan(piece.score), path, ": piece ", i, " has a NaN score");
    bool mergeable = piece.type == kNormal || piece.type == kUserDefined || piece.type == kUnused;
    if (mergeable) STAPO_CHECK(piece_ids_.emplace(piece.text, id).second, path, ": piece \"", piece.text, "\" twice");
    if (piece.type == kUnknown) unk_id_ = id;
    if (piece.type == kByte) {
      int byte = parse_byte_piece(piece.text);
      STAPO_CHECK(byte >= 0, path, ": byte piece ", i, " is \"", piece.text, "\", expected <0xXX>");
      byte_ids_[byte] = id;
    }
    if (piece.type == kUserDefined) user_defined_.add(piece.text, {id, false, false, false});
    if (piece.type == kControl && !piece.text.empty()) controls_.add(piece.text, {id, true, false, false});
    if (piece.type == kControl || piece.type == kUserDefined) special_ids_[piece.text] = id;
    if (piece.type == kControl && piece.text == bos_piece) bos_id_ = id;
    if (piece.type == kControl && piece.text == eos_piece) eos_id_ = id;
  }
  STAPO_CHECK(unk_id_ >= 0, path, ": no unknown piece");
  if (byte_fallback_)
    for (int b = 0; b < 256; ++b) STAPO_CHECK(byte_ids_[b] >= 0, path, ": byte_fallback without piece for byte ", b);
  if (!config.bos_token.empty()) bos_id_ = special_token_id(config.bos_token).value_or(-1);
  if (!config.eos_token.empty()) eos_id_ = special_token_id(config.eos_token).value_or(-1);
  adds_bos_ = config.add_bos_token.value_or(bos_id_ >= 0);  // HF's LlamaTokenizer default
  hash_ = stapo::content_hash(contents);
}

// The identity normalizer: optional dummy prefix, optional whitespace cleanup, ' ' → ▁.
std::string SentencePieceTokenizer::normalize(std::string_view text) const {
  std::string out;
  if (remove_extra_whitespaces_) {
    size_t begin = text.find_first_not_of(' ');
    text = begin == std::string_view::npos ? std::string_view() : text.substr(begin);
  }
  if (text.empty()) return out;
  const std::string space = escape_whitespaces_ ? kSpace : " ";
  if (add_dummy_prefix_) out += space;
  bool prev_space = false;
  for (char c : text) {
    if (c == ' ') {
      if (!(remove_extra_whitespaces_ && prev_space)) out += space;
      prev_space = true;
    } else {
      out += c;
      prev_space = false;
    }
  }
  if (remove_extra_whitespaces_)
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  return out;
}

std::vector<int32_t> SentencePieceTokenizer::encode_with_special_ranges(std::string_view text,
                                                                        const SpecialRanges& special_ranges) const {
  utf8_validate(text, "input text");
  std::vector<int32_t> ids;
  // sentencepiece never looks for control pieces in text; where specials are allowed the text is cut at them
  // and each stretch encoded on its own, as HF's slow LlamaTokenizer does.
  controls_.split(
      text, special_ranges, [&](std::string_view segment, size_t) { encode_normalized(normalize(segment), ids); },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

void SentencePieceTokenizer::encode_normalized(const std::string& text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<BpeSymbol> symbols;
  std::vector<bool> frozen;  // user-defined symbols never merge
  for (size_t pos = 0; pos < text.size();) {
    size_t len = utf8_char_length(text, pos), user_len = 0;
    bool user_defined = !user_defined_.empty() && user_defined_.match(text, pos, 0, &user_len);
    if (user_defined) len = user_len;
    int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({-1, static_cast<int32_t>(pos), static_cast<int32_t>(len), index - 1, index + 1});
    frozen.push_back(user_defined);
    pos += len;
  }
  symbols.back().next = -1;
  // Pieces of type UNUSED may be merge steps; they are split back into their halves at the end.
  std::unordered_map<std::string, std::pair<std::string, std::string>> unused_halves;
  bpe_merge(symbols, [&](const BpeSymbol& a, const BpeSymbol& b, double* priority, int32_t* merged) {
    if (frozen[&a - symbols.data()] || frozen[&b - symbols.data()]) return false;
    std::string_view piece = std::string_view(text).substr(a.start, a.len + b.len);
    auto it = piece_ids_.find(piece);
    if (it == piece_ids_.end()) return false;
    *priority = -static_cast<double>(pieces_[it->second].score);
    *merged = it->second;
    if (pieces_[it->second].type == kUnused)
      unused_halves[std::string(piece)] = {text.substr(a.start, a.len), text.substr(b.start, b.len)};
    return true;
  });

  bool prev_unk = false;
  auto emit = [&](std::string_view piece, auto&& self) -> void {
    auto it = piece_ids_.find(piece);
    if (it != piece_ids_.end() && pieces_[it->second].type == kUnused) {
      auto halves = unused_halves.find(std::string(piece));
      if (halves != unused_halves.end()) {
        self(halves->second.first, self);
        self(halves->second.second, self);
        return;
      }
    }
    if (it != piece_ids_.end()) {
      out.push_back(it->second);
      prev_unk = false;
    } else if (byte_fallback_) {
      for (char c : piece) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
      prev_unk = false;
    } else {
      if (!prev_unk) out.push_back(unk_id_);  // a run of unknown pieces is one unk
      prev_unk = true;
    }
  };
  for (int32_t i = 0; i >= 0; i = symbols[i].next)
    emit(std::string_view(text).substr(symbols[i].start, symbols[i].len), emit);
}

// As sentencepiece: ▁ → ' ', the dummy prefix's space dropped from the first piece, byte pieces joined into
// UTF-8 (each invalid byte as U+FFFD), control pieces empty, unk as " ⁇ ".
std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out, bytes;
  auto flush = [&] {
    out += utf8_make_valid(bytes, true);
    bytes.clear();
  };
  bool first = true;
  for (int32_t id : ids) {
    STAPO_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is out of range (vocabulary size ", vocab_size(),
                ")");
    const Piece& piece = pieces_[id];
    if (piece.type == kByte) {
      bytes += static_cast<char>(parse_byte_piece(piece.text));
      first = false;
      continue;
    }
    flush();
    if (piece.type == kControl) continue;
    if (piece.type == kUnknown) {
      out += " \xE2\x81\x87 ";
      first = false;
      continue;
    }
    std::string text = piece.text;
    if (first && add_dummy_prefix_ && text.compare(0, kSpace.size(), kSpace) == 0) text.erase(0, kSpace.size());
    for (size_t pos; (pos = text.find(kSpace)) != std::string::npos;) text.replace(pos, kSpace.size(), " ");
    out += text;
    first = false;
  }
  flush();
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path, const std::string& contents,
                                                    const TokenizerConfig& config) {
  return std::make_unique<SentencePieceTokenizer>(path, contents, config);
}

}  // namespace stapo
