// The interpreter behind jinja.h, in three parts: a lexer with jinja2's whitespace rules (as HF configures it:
// trim_blocks, lstrip_blocks, one trailing newline dropped, newlines normalised), a recursive-descent parser
// with jinja2's operator precedence, and a tree-walking evaluator with Python's value semantics. Anything
// outside the subset is refused with "<origin>:<line>: unsupported Jinja construct '...' (supported: ...)".
#include "tokenizer/jinja.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <optional>

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace stapo::jinja {

// ------------------------------------------------------------------------------------------------ TaggedText

void TaggedText::append(std::string_view text, bool data) {
  if (text.empty()) return;
  text_.append(text);
  if (!runs_.empty() && runs_.back().second == data)
    runs_.back().first = text_.size();
  else
    runs_.push_back({text_.size(), data});
}

void TaggedText::append(const TaggedText& other) {
  size_t begin = 0;
  for (auto [end, data] : other.runs_) {
    append(std::string_view(other.text_).substr(begin, end - begin), data);
    begin = end;
  }
}

TaggedText TaggedText::slice(size_t begin, size_t end) const {
  TaggedText out;
  size_t run_begin = 0;
  for (auto [run_end, data] : runs_) {
    size_t b = std::max(begin, run_begin), e = std::min(end, run_end);
    if (b < e) out.append(std::string_view(text_).substr(b, e - b), data);
    run_begin = run_end;
    if (run_begin >= end) break;
  }
  return out;
}

std::vector<std::pair<std::string, bool>> TaggedText::runs() const {
  std::vector<std::pair<std::string, bool>> out;
  size_t begin = 0;
  for (auto [end, data] : runs_) {
    out.emplace_back(text_.substr(begin, end - begin), data);
    begin = end;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ Value

Value Value::none() {
  Value v;
  v.kind = Kind::none;
  return v;
}
Value Value::from_bool(bool b) {
  Value v;
  v.kind = Kind::boolean;
  v.boolean = b;
  return v;
}
Value Value::from_int(int64_t i) {
  Value v;
  v.kind = Kind::integer;
  v.integer = i;
  return v;
}
Value Value::from_double(double d) {
  Value v;
  v.kind = Kind::floating;
  v.floating = d;
  return v;
}
Value Value::from_text(std::string_view text, bool data) { return from_text(TaggedText(text, data)); }
Value Value::from_text(TaggedText text) {
  Value v;
  v.kind = Kind::string;
  v.string = std::move(text);
  return v;
}
Value Value::from_list(List items) {
  Value v;
  v.kind = Kind::list;
  v.list = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::from_dict(Dict items) {
  Value v;
  v.kind = Kind::dict;
  v.dict = std::make_shared<Dict>(std::move(items));
  return v;
}
Value Value::undefined(std::string what) {
  Value v;
  v.name = std::move(what);
  return v;
}

using Kind = Value::Kind;

namespace {

// ------------------------------------------------------------------------------------------------ text helpers

size_t char_length(std::string_view s, size_t pos) {
  size_t n = utf8_char_length(s, pos);
  return n ? n : 1;
}

uint32_t code_point(std::string_view s, size_t pos, size_t len) {
  return len == utf8_char_length(s, pos) ? utf8_decode(s, pos, len) : static_cast<uint8_t>(s[pos]);
}

// Byte offset of each character, then s.size(): Python indexes strings by character.
std::vector<size_t> char_offsets(std::string_view s) {
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < s.size(); pos += char_length(s, pos)) offsets.push_back(pos);
  offsets.push_back(s.size());
  return offsets;
}

bool is_python_space(uint32_t cp) { return utf8_is_white_space(cp) || (cp >= 0x1C && cp <= 0x1F); }

// [begin, end) of s without the leading and/or trailing characters that are Python white space (chars null) or
// in *chars.
std::pair<size_t, size_t> strip_bounds(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<uint32_t> set;
  if (chars)
    for (size_t pos = 0; pos < chars->size(); pos += char_length(*chars, pos))
      set.push_back(code_point(*chars, pos, char_length(*chars, pos)));
  auto strips = [&](size_t pos, size_t len) {
    uint32_t cp = code_point(s, pos, len);
    return chars ? std::find(set.begin(), set.end(), cp) != set.end() : is_python_space(cp);
  };
  size_t begin = 0, end = s.size();
  while (left && begin < end) {
    size_t len = char_length(s, begin);
    if (!strips(begin, len)) break;
    begin += len;
  }
  while (right && end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    if (!strips(start, end - start)) break;
    end = start;
  }
  return {begin, end};
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
}

// Python's repr(float): the shortest digits that read back to the same double; fixed notation for exponents
// -4..15, else d.ddde±XX.
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    snprintf(buf, sizeof(buf), "%.*e", precision - 1, v);
    if (strtod(buf, nullptr) == v) break;
  }
  std::string s = buf, sign;
  if (s[0] == '-') {
    sign = "-";
    s = s.substr(1);
  }
  size_t e = s.find('e');
  int exponent = std::stoi(s.substr(e + 1));
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) return sign + "0." + std::string(-exponent - 1, '0') + digits;
    std::string whole = digits.substr(0, std::min<size_t>(digits.size(), exponent + 1));
    whole += std::string(exponent + 1 - whole.size(), '0');
    std::string fraction = digits.size() > static_cast<size_t>(exponent + 1) ? digits.substr(exponent + 1) : "0";
    return sign + whole + "." + fraction;
  }
  std::string mantissa = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
  char exp_text[16];
  snprintf(exp_text, sizeof(exp_text), "%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + mantissa + "e" + exp_text;
}

// Characters Python's repr() escapes beyond ASCII controls (str.isprintable() is false): C1 controls, the
// Unicode separators and the common format characters.
bool python_unprintable(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) ||
         (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF ||
         (cp >= 0xE000 && cp <= 0xF8FF);
}

// One string's repr() text (quotes included), keeping each byte's origin.
void repr_string(const TaggedText& s, TaggedText& out) {
  const std::string& t = s.text();
  char quote = t.find('\'') != std::string::npos && t.find('"') == std::string::npos ? '"' : '\'';
  out.append(std::string(1, quote), false);
  for (const auto& [run, data] : s.runs()) {
    std::string escaped;
    for (size_t pos = 0; pos < run.size();) {
      size_t len = char_length(run, pos);
      uint32_t cp = code_point(run, pos, len);
      char buf[16];
      if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
        escaped += '\\';
        escaped += static_cast<char>(cp);
      } else if (cp == '\n' || cp == '\r' || cp == '\t') {
        escaped += cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : "\\t";
      } else if (python_unprintable(cp)) {
        snprintf(buf, sizeof(buf), cp <= 0xFF ? "\\x%02x" : "\\u%04x", cp);
        escaped += buf;
      } else {
        escaped.append(run, pos, len);
      }
      pos += len;
    }
    out.append(escaped, data);
  }
  out.append(std::string(1, quote), false);
}

// A JSON string as Python's json.dumps(ensure_ascii=False) writes it, keeping each byte's origin.
void json_string(const TaggedText& s, TaggedText& out) {
  out.append("\"", false);
  for (const auto& [run, data] : s.runs()) {
    std::string escaped;
    for (char c : run) {
      auto u = static_cast<uint8_t>(c);
      if (c == '"' || c == '\\') {
        escaped += '\\';
        escaped += c;
      } else if (c == '\n') {
        escaped += "\\n";
      } else if (c == '\r') {
        escaped += "\\r";
      } else if (c == '\t') {
        escaped += "\\t";
      } else if (c == '\b') {
        escaped += "\\b";
      } else if (c == '\f') {
        escaped += "\\f";
      } else if (u < 0x20) {
        char buf[8];
        snprintf(buf, sizeof(buf), "\\u%04x", u);
        escaped += buf;
      } else {
        escaped += c;
      }
    }
    out.append(escaped, data);
  }
  out.append("\"", false);
}

// Python's str.splitlines() boundaries: (begin, end of line content, end including the line break).
std::vector<std::array<size_t, 3>> split_lines(std::string_view s) {
  std::vector<std::array<size_t, 3>> lines;
  size_t begin = 0, pos = 0;
  while (pos < s.size()) {
    size_t len = char_length(s, pos);
    uint32_t cp = code_point(s, pos, len);
    bool is_break = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) ||
                    cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!is_break) {
      pos += len;
      continue;
    }
    size_t after = pos + len;
    if (cp == '\r' && after < s.size() && s[after] == '\n') ++after;
    lines.push_back({begin, pos, after});
    begin = pos = after;
  }
  if (begin < s.size()) lines.push_back({begin, s.size(), s.size()});
  return lines;
}

// ------------------------------------------------------------------------------------------------ lexer

enum class Tok { data, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  Tok type;
  std::string text;  // data, name, string value, operator
  int line = 0;
  int64_t integer = 0;
  double floating = 0;
};

// Python's string-literal escapes (jinja2 decodes literals with "unicode-escape").
std::string unescape(std::string_view body, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    char c = body[++i];
    auto append_code_point = [&](uint32_t cp) {
      STAPO_CHECK(cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF), where, ": escape for an invalid code point");
      utf8_append(out, cp);
    };
    auto hex = [&](int digits) {
      STAPO_CHECK(i + digits < body.size(), where, ": truncated \\", c, " escape");
      uint32_t cp = 0;
      for (int k = 0; k < digits; ++k) {
        char h = body[i + 1 + k];
        STAPO_CHECK(isxdigit(static_cast<unsigned char>(h)), where, ": bad \\", c, " escape");
        cp = cp * 16 + (isdigit(static_cast<unsigned char>(h)) ? h - '0' : (tolower(h) - 'a' + 10));
      }
      i += digits;
      append_code_point(cp);
    };
    switch (c) {
      case '\n': break;  // a backslash at the end of a line continues it
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      default:
        if (c >= '0' && c <= '7') {
          uint32_t cp = c - '0';
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            cp = cp * 8 + (body[++i] - '0');
          append_code_point(cp);
        } else {
          STAPO_CHECK(c != 'N', where, ": unsupported Jinja construct '\\N{...}' escape in a string literal");
          out += '\\';  // Python keeps unknown escapes as written
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& origin) : origin_(origin) {
    // jinja2 joins the source's lines with "\n" and drops one trailing newline (keep_trailing_newline=False).
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (true) {
      size_t open = find_open(pos);
      std::string data = src_.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
      int data_line = line_;
      if (open == std::string::npos) {
        if (!data.empty()) tokens_.push_back({Tok::data, data, data_line});
        break;
      }
      advance_lines(pos, open);
      char kind = src_[open + 1];
      size_t p = open + 2;
      char modifier = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) modifier = src_[p++];
      if (modifier == '-') {
        data = data.substr(0, strip_bounds(data, nullptr, false, true).second);
      } else if (modifier != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs between the start of a line and a block or comment tag go.
        size_t line_begin = data.rfind('\n');
        line_begin = line_begin == std::string::npos ? 0 : line_begin + 1;
        if ((line_begin > 0 || line_starting) && data.find_first_not_of(" \t", line_begin) == std::string::npos)
          data.resize(line_begin);
      }
      if (!data.empty()) tokens_.push_back({Tok::data, data, data_line});
      size_t end = kind == '#' ? comment(open, p) : tag(kind == '{', p);
      line_starting = src_[end - 1] == '\n';
      pos = end;
    }
    tokens_.push_back({Tok::eof, "", line_});
    return std::move(tokens_);
  }

 private:
  size_t find_open(size_t pos) const {
    for (size_t p = src_.find('{', pos); p != std::string::npos && p + 1 < src_.size(); p = src_.find('{', p + 1))
      if (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#') return p;
    return std::string::npos;
  }
  void advance_lines(size_t from, size_t to) { line_ += static_cast<int>(std::count(src_.begin() + from, src_.begin() + to, '\n')); }
  [[noreturn]] void error(const std::string& what) const { fail(origin_, ":", line_, ": ", what); }

  size_t skip_space(size_t p) const {
    while (p < src_.size() && isspace(static_cast<unsigned char>(src_[p]))) ++p;
    return p;
  }

  // A comment from `open`; body from `p`. Returns the end (after trim_blocks' newline or '-' whitespace).
  size_t comment(size_t open, size_t p) {
    size_t close = src_.find("#}", p);
    if (close == std::string::npos) error("unclosed comment '{#' (missing '#}')");
    size_t end = close + 2;
    if (close > p && src_[close - 1] == '-')
      end = skip_space(end);
    else if (!(close > p && src_[close - 1] == '+') && end < src_.size() && src_[end] == '\n')
      ++end;
    advance_lines(open, end);
    return end;
  }

  // A {{ }} or {% %} tag whose contents start at p; pushes its tokens, returns the end.
  size_t tag(bool variable, size_t p) {
    tokens_.push_back({variable ? Tok::var_begin : Tok::block_begin, "", line_});
    int depth = 0;  // open brackets: "}}" inside a dict literal does not end the tag
    while (true) {
      while (p < src_.size() && isspace(static_cast<unsigned char>(src_[p]))) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      if (p >= src_.size()) error(variable ? "unclosed '{{' (missing '}}')" : "unclosed '{%' (missing '%}')");
      auto at = [&](const char* s) { return src_.compare(p, strlen(s), s) == 0; };
      if (depth == 0) {
        const char* close = variable ? "}}" : "%}";
        size_t end = std::string::npos;
        if (src_[p] == '-' && src_.compare(p + 1, 2, close) == 0) {
          end = skip_space(p + 3);
        } else if (!variable && at("+%}")) {
          end = p + 3;
        } else if (at(close)) {
          end = p + 2;
          if (!variable && end < src_.size() && src_[end] == '\n') ++end;  // trim_blocks
        }
        if (end != std::string::npos) {
          tokens_.push_back({variable ? Tok::var_end : Tok::block_end, "", line_});
          advance_lines(p, end);
          return end;
        }
      }
      p = token(p, depth);
    }
  }

  size_t token(size_t p, int& depth) {
    char c = src_[p];
    if (isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < src_.size() && (isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      tokens_.push_back({Tok::name, src_.substr(p, e - p), line_});
      return e;
    }
    if (isdigit(static_cast<unsigned char>(c))) return number(p);
    if (c == '\'' || c == '"') {
      size_t e = p + 1;
      while (e < src_.size() && src_[e] != c) e += src_[e] == '\\' ? 2 : 1;
      if (e >= src_.size()) error("unterminated string literal");
      std::string where = cat(origin_, ":", line_);
      tokens_.push_back({Tok::string, unescape(std::string_view(src_).substr(p + 1, e - p - 1), where), line_});
      advance_lines(p, e);
      return e + 1;
    }
    static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                       "=",  ".",  ",",  ":",  "|",  "(",  ")", "[", "]", "{", "}"};
    for (const char* op : kOps) {
      if (src_.compare(p, strlen(op), op) != 0) continue;
      if (strchr("([{", op[0]) && op[1] == 0) ++depth;
      if (strchr(")]}", op[0]) && op[1] == 0) depth = std::max(0, depth - 1);
      tokens_.push_back({Tok::op, op, line_});
      return p + strlen(op);
    }
    error(cat("unexpected character '", c, "' in a tag"));
  }

  size_t number(size_t p) {
    size_t e = p;
    auto digits = [&] {
      while (e < src_.size() && (isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    };
    digits();
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && isdigit(static_cast<unsigned char>(src_[x]))) {
        is_float = true;
        e = x;
        digits();
      }
    }
    std::string text = src_.substr(p, e - p);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Token t{is_float ? Tok::floating : Tok::integer, text, line_};
    errno = 0;
    if (is_float) {
      t.floating = strtod(text.c_str(), nullptr);
    } else {
      t.integer = strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) error("integer literal " + text + " is too large");
    }
    tokens_.push_back(t);
    return e;
  }

  const std::string& origin_;
  std::string src_;
  std::vector<Token> tokens_;
  int line_ = 1;
};

// ------------------------------------------------------------------------------------------------ syntax tree

enum class Op { literal, name, list, dict, attr, item, slice, call, filter, test, negate, plus, not_, and_, or_,
                binary, compare, concat, conditional };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  Op op;
  int line = 0;
  Value value;                                          // literal
  std::string name;                                     // name, attr, filter, test, binary operator
  std::vector<ExprPtr> args;                            // operands; args[0] is the subject of attr..test
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // call/filter/test keyword arguments
  std::vector<std::string> ops;                         // compare: the operators between args
  bool negated = false;                                 // test: "is not"
};

enum class Stmt { text, output, if_, for_, set, set_attribute, set_block, macro, break_, continue_ };

struct Node {
  Stmt type;
  int line = 0;
  std::string text;                       // text; set_attribute: the attribute; macro: its name
  std::vector<std::string> targets;       // for/set: the names assigned; set_attribute: the namespace; macro: params
  std::vector<ExprPtr> exprs;             // output/set: value; if: conditions; for: iterable, filter (or null);
                                          // macro: parameter defaults (null when none)
  std::vector<std::vector<Node>> bodies;  // if: per condition, then else; for: body, else; set_block/macro: body
};

Node make_node(Stmt type, int line) {
  Node n;
  n.type = type;
  n.line = line;
  return n;
}

const char* const kSupportedStatements = "for/else, if/elif/else, set (also ns.attr and {% set %}...{% endset %}), "
                                         "macro, break, continue, generation";

}  // namespace

// ------------------------------------------------------------------------------------------------ builtins

struct Renderer;
using Args = std::vector<Value>;
using Kwargs = Dict;

struct Callable {
  std::string name;
  const Node* macro = nullptr;  // a macro, else a builtin
  std::function<Value(Renderer&, const Args&, const Kwargs&, int line)> builtin;
};

namespace {

using FilterFn = Value (*)(Renderer&, const Value& subject, const Args&, const Kwargs&, int line);
using TestFn = bool (*)(Renderer&, const Value& subject, const Args&, int line);
const std::map<std::string, FilterFn>& filters();
const std::map<std::string, TestFn>& tests();

std::string names_of(const std::map<std::string, FilterFn>& m) {
  std::string s;
  for (const auto& [name, fn] : m) s += (s.empty() ? "" : ", ") + name;
  return s;
}
std::string names_of(const std::map<std::string, TestFn>& m) {
  std::string s;
  for (const auto& [name, fn] : m) s += (s.empty() ? "" : ", ") + name;
  return s;
}

// ------------------------------------------------------------------------------------------------ parser

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& origin) : t_(std::move(tokens)), origin_(origin) {}

  std::vector<Node> parse_template() {
    std::string end;
    std::vector<Node> nodes = parse_body({}, &end);
    return nodes;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).type == Tok::op && peek(ahead).text == op;
  }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::name && peek(ahead).text == name;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    ++i_;
    return true;
  }
  template <typename... A>
  [[noreturn]] void error(int line, const A&... what) const {
    fail(origin_, ":", line, ": ", what...);
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::block_end: return "'%}'";
      case Tok::var_end: return "'}}'";
      case Tok::eof: return "the end of the template";
      case Tok::data: return "template text";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) error(peek().line, "expected '", op, "' but found ", describe(peek()));
  }
  std::string expect_identifier() {
    if (peek().type != Tok::name) error(peek().line, "expected a name but found ", describe(peek()));
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Tok::block_end) error(peek().line, "expected '%}' but found ", describe(peek()));
    ++i_;
  }

  // Nodes until a block tag whose first name is in `ends` (consumed with the name; *ended_by says which) or the
  // end of the template (only when `ends` is empty). The first of `ends` is the closing tag.
  std::vector<Node> parse_body(std::initializer_list<const char*> ends, std::string* ended_by) {
    std::vector<Node> nodes;
    while (true) {
      const Token& t = peek();
      if (t.type == Tok::eof) {
        if (ends.size() == 0) return nodes;
        error(t.line, "missing '{% ", *ends.begin(), " %}' before the end of the template");
      }
      if (t.type == Tok::data) {
        Node n = make_node(Stmt::text, t.line);
        n.text = next().text;
        nodes.push_back(std::move(n));
      } else if (t.type == Tok::var_begin) {
        ++i_;
        Node n = make_node(Stmt::output, t.line);
        n.exprs.push_back(parse_expression(true));
        if (peek().type != Tok::var_end) error(peek().line, "expected '}}' but found ", describe(peek()));
        ++i_;
        nodes.push_back(std::move(n));
      } else {
        ++i_;  // block_begin
        const Token& keyword = peek();
        if (keyword.type != Tok::name) error(keyword.line, "expected a statement name after '{%'");
        for (const char* end : ends) {
          if (keyword.text == end) {
            ++i_;
            *ended_by = end;
            return nodes;
          }
        }
        parse_statement(nodes);
      }
    }
  }

  void parse_statement(std::vector<Node>& out) {
    const Token& keyword = next();
    const std::string& k = keyword.text;
    int line = keyword.line;
    std::string end;
    if (k == "for") {
      Node n = make_node(Stmt::for_, line);
      n.targets = parse_targets();
      if (!accept_name("in")) error(peek().line, "expected 'in' in '{% for %}' but found ", describe(peek()));
      n.exprs.push_back(parse_expression(false));
      n.exprs.push_back(accept_name("if") ? parse_expression(true) : nullptr);
      if (is_name("recursive"))
        error(line, "unsupported Jinja construct '{% for ... recursive %}' (supported: ", kSupportedStatements, ")");
      expect_block_end();
      ++loop_depth_;
      n.bodies.push_back(parse_body({"endfor", "else"}, &end));
      --loop_depth_;
      if (end == "else") {
        expect_block_end();
        n.bodies.push_back(parse_body({"endfor"}, &end));
      } else {
        n.bodies.emplace_back();
      }
      expect_block_end();
      out.push_back(std::move(n));
    } else if (k == "if") {
      Node n = make_node(Stmt::if_, line);
      n.exprs.push_back(parse_expression(false));
      expect_block_end();
      n.bodies.push_back(parse_body({"endif", "elif", "else"}, &end));
      while (end == "elif") {
        n.exprs.push_back(parse_expression(false));
        expect_block_end();
        n.bodies.push_back(parse_body({"endif", "elif", "else"}, &end));
      }
      if (end == "else") {
        expect_block_end();
        n.bodies.push_back(parse_body({"endif"}, &end));
      }
      expect_block_end();
      out.push_back(std::move(n));
    } else if (k == "set") {
      if (peek().type == Tok::name && is_op(".", 1)) {
        Node n = make_node(Stmt::set_attribute, line);
        n.targets.push_back(next().text);
        ++i_;
        n.text = expect_identifier();
        expect_op("=");
        n.exprs.push_back(parse_tuple());
        expect_block_end();
        out.push_back(std::move(n));
        return;
      }
      std::vector<std::string> targets = parse_targets();
      if (accept_op("=")) {
        Node n = make_node(Stmt::set, line);
        n.targets = std::move(targets);
        n.exprs.push_back(parse_tuple());
        expect_block_end();
        out.push_back(std::move(n));
        return;
      }
      if (is_op("|"))
        error(line, "unsupported Jinja construct '{% set ... | filter %}' (supported: ", kSupportedStatements, ")");
      if (targets.size() != 1) error(line, "'{% set %}...{% endset %}' assigns one name");
      Node n = make_node(Stmt::set_block, line);
      n.targets = std::move(targets);
      expect_block_end();
      n.bodies.push_back(parse_body({"endset"}, &end));
      expect_block_end();
      out.push_back(std::move(n));
    } else if (k == "macro") {
      Node n = make_node(Stmt::macro, line);
      n.text = expect_identifier();
      expect_op("(");
      while (!accept_op(")")) {
        if (!n.targets.empty()) expect_op(",");
        if (accept_op(")")) break;
        n.targets.push_back(expect_identifier());
        n.exprs.push_back(accept_op("=") ? parse_expression(true) : nullptr);
      }
      expect_block_end();
      int saved = loop_depth_;
      loop_depth_ = 0;
      n.bodies.push_back(parse_body({"endmacro"}, &end));
      loop_depth_ = saved;
      expect_block_end();
      out.push_back(std::move(n));
    } else if (k == "break" || k == "continue") {
      if (loop_depth_ == 0) error(line, "'{% ", k, " %}' outside a for loop");
      expect_block_end();
      out.push_back(make_node(k == "break" ? Stmt::break_ : Stmt::continue_, line));
    } else if (k == "generation") {  // transformers' assistant-mask marker: renders its body
      expect_block_end();
      for (Node& n : parse_body({"endgeneration"}, &end)) out.push_back(std::move(n));
      expect_block_end();
    } else if (k == "endfor" || k == "endif" || k == "else" || k == "elif" || k == "endset" || k == "endmacro" ||
               k == "endgeneration") {
      error(line, "'{% ", k, " %}' without its opening statement");
    } else {
      error(line, "unsupported Jinja construct '{% ", k, " %}' (supported: ", kSupportedStatements, ")");
    }
  }

  // for/set targets: a name, or names separated by commas (optionally in parentheses).
  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool parens = accept_op("(");
    do {
      names.push_back(expect_identifier());
    } while (accept_op(","));
    if (parens) expect_op(")");
    return names;
  }

  ExprPtr make(Op op, int line) {
    auto e = std::make_unique<Expr>();
    e->op = op;
    e->line = line;
    return e;
  }

  // An expression, or several separated by commas (a tuple), as after '=' in {% set %}.
  ExprPtr parse_tuple() {
    int line = peek().line;
    ExprPtr first = parse_expression(true);
    if (!is_op(",")) return first;
    ExprPtr list = make(Op::list, line);
    list->name = "tuple";
    list->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (peek().type == Tok::block_end) break;
      list->args.push_back(parse_expression(true));
    }
    return list;
  }

  ExprPtr parse_expression(bool with_conditional) {
    if (!with_conditional) return parse_or();
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = next().line;
      ExprPtr c = make(Op::conditional, line);
      ExprPtr test = parse_or();
      ExprPtr otherwise = accept_name("else") ? parse_expression(true) : nullptr;
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(otherwise));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Op op, ExprPtr left, ExprPtr right, int line) {
    ExprPtr e = make(op, line);
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  // One left-associative level: operands from `operand`, joined by the keyword or the operators given.
  ExprPtr parse_level(ExprPtr (Parser::*operand)(), const char* keyword, Op keyword_op,
                      std::initializer_list<const char*> operators) {
    ExprPtr e = (this->*operand)();
    while (true) {
      if (keyword && is_name(keyword)) {
        int line = next().line;
        e = binary(keyword_op, std::move(e), (this->*operand)(), line);
        continue;
      }
      const char* found = nullptr;
      for (const char* op : operators)
        if (is_op(op)) found = op;
      if (!found) return e;
      int line = next().line;
      ExprPtr b = binary(Op::binary, std::move(e), (this->*operand)(), line);
      b->name = found;
      e = std::move(b);
    }
  }
  ExprPtr parse_or() { return parse_level(&Parser::parse_and, "or", Op::or_, {}); }
  ExprPtr parse_and() { return parse_level(&Parser::parse_not, "and", Op::and_, {}); }
  ExprPtr parse_not() {
    if (is_name("not")) {
      int line = next().line;
      ExprPtr e = make(Op::not_, line);
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    int line = peek().line;
    ExprPtr first = parse_math1();
    ExprPtr e;
    while (true) {
      std::string op;
      if (peek().type == Tok::op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                     peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else if (accept_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        break;
      }
      if (!e) {
        e = make(Op::compare, line);
        e->args.push_back(std::move(first));
      }
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    return e ? std::move(e) : std::move(first);
  }
  ExprPtr parse_math1() { return parse_level(&Parser::parse_concat, nullptr, Op::binary, {"+", "-"}); }
  ExprPtr parse_concat() {
    int line = peek().line;
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    ExprPtr e = make(Op::concat, line);
    e->args.push_back(std::move(first));
    while (accept_op("~")) e->args.push_back(parse_math2());
    return e;
  }
  ExprPtr parse_math2() { return parse_level(&Parser::parse_pow, nullptr, Op::binary, {"*", "/", "//", "%"}); }
  ExprPtr parse_pow() { return parse_level(&Parser::parse_unary_filtered, nullptr, Op::binary, {"**"}); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }
  ExprPtr parse_unary(bool with_filter) {
    int line = peek().line;
    ExprPtr e;
    if (accept_op("-")) {
      e = make(Op::negate, line);
      e->args.push_back(parse_unary(false));
    } else if (accept_op("+")) {
      e = make(Op::plus, line);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(std::move(e)) : std::move(e);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    int line = t.line;
    ExprPtr e;
    switch (t.type) {
      case Tok::name: {
        std::string name = next().text;
        e = make(Op::literal, line);
        if (name == "true" || name == "True") {
          e->value = Value::from_bool(true);
        } else if (name == "false" || name == "False") {
          e->value = Value::from_bool(false);
        } else if (name == "none" || name == "None") {
          e->value = Value::none();
        } else {
          e->op = Op::name;
          e->name = name;
        }
        return e;
      }
      case Tok::string: {
        std::string text;
        while (peek().type == Tok::string) text += next().text;  // adjacent literals join, as in Python
        e = make(Op::literal, line);
        e->value = Value::from_text(text, false);
        return e;
      }
      case Tok::integer:
        e = make(Op::literal, line);
        e->value = Value::from_int(next().integer);
        return e;
      case Tok::floating:
        e = make(Op::literal, line);
        e->value = Value::from_double(next().floating);
        return e;
      default: break;
    }
    if (accept_op("(")) {  // a parenthesised expression or a tuple
      ExprPtr list = make(Op::list, line);
      list->name = "tuple";
      if (accept_op(")")) return list;
      ExprPtr first = parse_expression(true);
      if (accept_op(")")) return first;
      list->args.push_back(std::move(first));
      while (accept_op(",")) {
        if (is_op(")")) break;
        list->args.push_back(parse_expression(true));
      }
      expect_op(")");
      return list;
    }
    if (accept_op("[")) {
      ExprPtr list = make(Op::list, line);
      while (!accept_op("]")) {
        if (!list->args.empty()) expect_op(",");
        if (accept_op("]")) break;
        list->args.push_back(parse_expression(true));
      }
      return list;
    }
    if (accept_op("{")) {
      ExprPtr dict = make(Op::dict, line);
      while (!accept_op("}")) {
        if (!dict->args.empty()) expect_op(",");
        if (accept_op("}")) break;
        dict->args.push_back(parse_expression(true));
        expect_op(":");
        dict->args.push_back(parse_expression(true));
      }
      return dict;
    }
    error(line, "expected a value but found ", describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = peek().line;
      if (accept_op(".")) {
        ExprPtr a;
        if (peek().type == Tok::integer) {  // foo.0 is foo[0]
          a = make(Op::item, line);
          a->args.push_back(std::move(e));
          ExprPtr index = make(Op::literal, line);
          index->value = Value::from_int(next().integer);
          a->args.push_back(std::move(index));
        } else {
          a = make(Op::attr, line);
          a->name = expect_identifier();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (accept_op("[")) {
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr subject, int line) {
    ExprPtr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (accept_op(":")) {
        if (++colons > 2) error(line, "a slice has at most two ':'");
        continue;
      }
      if (parts[colons]) error(line, "unsupported Jinja construct 'tuple subscript' (use one index or a slice)");
      parts[colons] = parse_expression(true);
    }
    expect_op("]");
    ExprPtr e = make(colons ? Op::slice : Op::item, line);
    e->args.push_back(std::move(subject));
    if (colons == 0) {
      if (!parts[0]) error(line, "empty subscript '[]'");
      e->args.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) e->args.push_back(std::move(p));
    }
    return e;
  }

  // '(' arguments ')' into e (positional after the subject, keywords in kwargs).
  void parse_arguments(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!accept_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (accept_op(")")) break;
      if (is_op("*") || is_op("**"))
        error(peek().line, "unsupported Jinja construct '*args/**kwargs in a call'");
      if (peek().type == Tok::name && is_op("=", 1)) {
        std::string key = next().text;
        ++i_;
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kwargs.empty()) error(peek().line, "a positional argument follows a keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
  }

  ExprPtr parse_call(ExprPtr callee) {
    ExprPtr e = make(Op::call, peek().line);
    e->args.push_back(std::move(callee));
    parse_arguments(*e);
    return e;
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      int line = peek().line;
      if (accept_op("|")) {
        ExprPtr f = make(Op::filter, line);
        f->name = expect_identifier();
        if (!filters().count(f->name))
          error(line, "unsupported Jinja construct 'filter ", f->name, "' (supported filters: ", names_of(filters()),
                ")");
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_arguments(*f);
        e = std::move(f);
      } else if (accept_name("is")) {
        ExprPtr t = make(Op::test, line);
        t->negated = accept_name("not");
        t->name = expect_identifier();
        if (!tests().count(t->name))
          error(line, "unsupported Jinja construct 'test ", t->name, "' (supported tests: ", names_of(tests()), ")");
        t->args.push_back(std::move(e));
        const Token& a = peek();
        bool bare_argument = (a.type == Tok::name && a.text != "else" && a.text != "or" && a.text != "and") ||
                             a.type == Tok::string || a.type == Tok::integer || a.type == Tok::floating ||
                             (a.type == Tok::op && (a.text == "[" || a.text == "{"));
        if (is_op("(")) {
          parse_arguments(*t);
        } else if (bare_argument) {  // "x is divisibleby 3"
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  const std::string& origin_;
  int loop_depth_ = 0;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ evaluation

struct Template::Impl {
  std::string origin;
  std::vector<Node> nodes;
};

enum class Flow { normal, break_loop, continue_loop };

// Guards against templates that would run or grow without bound (real chat templates are far below both).
constexpr int64_t kMaxLoopIterations = 1 << 20;
constexpr size_t kMaxTextBytes = size_t{1} << 28;

// One render: the scopes (jinja2's: the template's, one per loop iteration, one per macro call) and the output.
struct Renderer {
  const std::string& origin;
  std::vector<Dict> frames;  // frames[0]: the template's variables; innermost last
  size_t visible_from = 0;   // a macro sees its own frames and frames[0], not its caller's
  int call_depth = 0;
  int64_t iterations = 0;    // loop iterations so far (kMaxLoopIterations)

  template <typename... A>
  [[noreturn]] void error(int line, const A&... what) const {
    fail(origin, ":", line, ": ", what...);
  }
  [[noreturn]] void unsupported(int line, const std::string& construct, const std::string& supported) const {
    error(line, "unsupported Jinja construct '", construct, "' (supported: ", supported, ")");
  }

  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v) {
    Dict& frame = frames.back();
    for (auto& [key, value] : frame)
      if (key == name) {
        value = std::move(v);
        return;
      }
    frame.emplace_back(name, std::move(v));
  }

  Flow exec(const std::vector<Node>& nodes, TaggedText& out);
  Value eval(const Expr& e);
  Value call(const Value& fn, const Args& args, const Kwargs& kwargs, int line);
  Value call_method(const Value& subject, const std::string& method, const Args& args, const Kwargs& kwargs,
                    int line);

  // Value helpers that need the line for their messages.
  void require_defined(const Value& v, int line) const {
    if (v.kind == Kind::undefined) error(line, v.name);
  }
  TaggedText text_of(const Value& v) const;  // str()
  bool truthy(const Value& v) const;
  bool equal(const Value& a, const Value& b) const;
  int compare(const Value& a, const Value& b, int line) const;
  bool contains(const Value& container, const Value& item, int line) const;
  List items_of(const Value& v, int line) const;  // iteration, as Python's iter()
  size_t length_of(const Value& v, int line) const;
  Value attribute(const Value& subject, const std::string& name, int line) const;
  Value item(const Value& subject, const Value& key, int line) const;
  Value binary(const std::string& op, const Value& a, const Value& b, int line) const;
  void repr_into(const Value& v, TaggedText& out) const;
  void json_into(const Value& v, TaggedText& out, int indent, int depth, const std::string& item_sep,
                 const std::string& key_sep, bool sort_keys, int line) const;
};

namespace {

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::namespace_object: return "Namespace";
    case Kind::callable: return "function";
  }
  return "?";
}

bool is_number(const Value& v) {
  return v.kind == Kind::boolean || v.kind == Kind::integer || v.kind == Kind::floating;
}
Value make_tuple(List items) {
  Value v = Value::from_list(std::move(items));
  v.tuple = true;
  return v;
}
bool is_integral(const Value& v) { return v.kind == Kind::boolean || v.kind == Kind::integer; }
int64_t as_int(const Value& v) { return v.kind == Kind::boolean ? v.boolean : v.integer; }
double as_double(const Value& v) { return v.kind == Kind::floating ? v.floating : static_cast<double>(as_int(v)); }

const Value* find_key(const Dict& d, const std::string& key) {
  for (const auto& [k, v] : d)
    if (k == key) return &v;
  return nullptr;
}

// A positional-or-keyword argument of a filter or method: args[index] or kwargs[name], or null.
const Value* argument(const Args& args, const Kwargs& kwargs, size_t index, const char* name) {
  if (index < args.size()) return &args[index];
  return find_key(kwargs, name);
}

Value make_builtin(const std::string& name, std::function<Value(Renderer&, const Args&, const Kwargs&, int)> fn) {
  Value v;
  v.kind = Kind::callable;
  auto c = std::make_shared<Callable>();
  c->name = name;
  c->builtin = std::move(fn);
  v.callable = std::move(c);
  return v;
}

// Python's slice.indices(): the positions a[start:stop:step] takes from a sequence of n.
std::vector<int64_t> slice_positions(const Value* start, const Value* stop, const Value* step, int64_t n,
                                     const Renderer& r, int line) {
  auto as_index = [&](const Value* v, const char* what) -> std::optional<int64_t> {
    if (!v || v->kind == Kind::none) return std::nullopt;
    if (!is_integral(*v)) r.error(line, "slice ", what, " must be an integer, not ", type_name(*v));
    return as_int(*v);
  };
  int64_t s = as_index(step, "step").value_or(1);
  if (s == 0) r.error(line, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> i, int64_t fallback) {
    if (!i) return fallback;
    int64_t x = *i < 0 ? *i + n : *i;
    return s > 0 ? std::clamp<int64_t>(x, 0, n) : std::clamp<int64_t>(x, -1, n - 1);
  };
  int64_t b = clamp(as_index(start, "start"), s > 0 ? 0 : n - 1);
  int64_t e = clamp(as_index(stop, "stop"), s > 0 ? n : -1);
  std::vector<int64_t> positions;
  for (int64_t i = b; s > 0 ? i < e : i > e; i += s) positions.push_back(i);
  return positions;
}

}  // namespace

bool Renderer::truthy(const Value& v) const {
  switch (v.kind) {
    case Kind::undefined:
    case Kind::none: return false;
    case Kind::boolean: return v.boolean;
    case Kind::integer: return v.integer != 0;
    case Kind::floating: return v.floating != 0;
    case Kind::string: return v.string.size() > 0;
    case Kind::list: return !v.list->empty();
    case Kind::dict: return !v.dict->empty();
    default: return true;
  }
}

TaggedText Renderer::text_of(const Value& v) const {
  switch (v.kind) {
    case Kind::undefined: return {};
    case Kind::none: return TaggedText("None", false);
    case Kind::boolean: return TaggedText(v.boolean ? "True" : "False", false);
    case Kind::integer: return TaggedText(std::to_string(v.integer), false);
    case Kind::floating: return TaggedText(float_repr(v.floating), false);
    case Kind::string: return v.string;
    default: {
      TaggedText out;
      repr_into(v, out);
      return out;
    }
  }
}

void Renderer::repr_into(const Value& v, TaggedText& out) const {
  switch (v.kind) {
    case Kind::string: repr_string(v.string, out); return;
    case Kind::list:
      out.append(v.tuple ? "(" : "[", false);
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out.append(", ", false);
        repr_into((*v.list)[i], out);
      }
      out.append(v.tuple ? (v.list->size() == 1 ? ",)" : ")") : "]", false);
      return;
    case Kind::dict:
    case Kind::namespace_object: {
      out.append(v.kind == Kind::dict ? "{" : "<Namespace {", false);
      bool first = true;
      for (const auto& [key, value] : *v.dict) {
        if (!first) out.append(", ", false);
        first = false;
        repr_string(TaggedText(key, false), out);
        out.append(": ", false);
        repr_into(value, out);
      }
      out.append(v.kind == Kind::dict ? "}" : "}>", false);
      return;
    }
    case Kind::callable: out.append("<function " + v.callable->name + ">", false); return;
    case Kind::undefined: return;
    default: out.append(text_of(v)); return;
  }
}

void Renderer::json_into(const Value& v, TaggedText& out, int indent, int depth, const std::string& item_sep,
                         const std::string& key_sep, bool sort_keys, int line) const {
  auto newline = [&](int level) {
    if (indent >= 0) out.append("\n" + std::string(static_cast<size_t>(indent) * level, ' '), false);
  };
  switch (v.kind) {
    case Kind::none: out.append("null", false); return;
    case Kind::boolean: out.append(v.boolean ? "true" : "false", false); return;
    case Kind::integer: out.append(std::to_string(v.integer), false); return;
    case Kind::floating:
      out.append(std::isnan(v.floating) ? "NaN" : std::isinf(v.floating) ? (v.floating > 0 ? "Infinity" : "-Infinity")
                                                                         : float_repr(v.floating),
                 false);
      return;
    case Kind::string: json_string(v.string, out); return;
    case Kind::list:
      if (v.list->empty()) {
        out.append("[]", false);
        return;
      }
      out.append("[", false);
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out.append(item_sep, false);
        newline(depth + 1);
        json_into((*v.list)[i], out, indent, depth + 1, item_sep, key_sep, sort_keys, line);
      }
      newline(depth);
      out.append("]", false);
      return;
    case Kind::dict: {
      if (v.dict->empty()) {
        out.append("{}", false);
        return;
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : *v.dict) entries.push_back(&entry);
      if (sort_keys) std::sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out.append("{", false);
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out.append(item_sep, false);
        newline(depth + 1);
        json_string(TaggedText(entries[i]->first, false), out);
        out.append(key_sep, false);
        json_into(entries[i]->second, out, indent, depth + 1, item_sep, key_sep, sort_keys, line);
      }
      newline(depth);
      out.append("}", false);
      return;
    }
    default: error(line, "tojson: object of type ", type_name(v), " is not JSON serializable");
  }
}

bool Renderer::equal(const Value& a, const Value& b) const {
  if (is_number(a) && is_number(b)) {
    if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
    return as_double(a) == as_double(b);
  }
  if (a.kind != b.kind || a.tuple != b.tuple) return false;
  switch (a.kind) {
    case Kind::undefined:
    case Kind::none: return true;
    case Kind::string: return a.string.text() == b.string.text();
    case Kind::list:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i)
        if (!equal((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case Kind::dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [key, value] : *a.dict) {
        const Value* other = find_key(*b.dict, key);
        if (!other || !equal(value, *other)) return false;
      }
      return true;
    case Kind::namespace_object: return a.dict == b.dict;
    case Kind::callable: return a.callable == b.callable;
    default: return false;
  }
}

int Renderer::compare(const Value& a, const Value& b, int line) const {
  if (is_number(a) && is_number(b)) {
    if (is_integral(a) && is_integral(b)) return as_int(a) < as_int(b) ? -1 : as_int(a) > as_int(b);
    return as_double(a) < as_double(b) ? -1 : as_double(a) > as_double(b);
  }
  if (a.kind == Kind::string && b.kind == Kind::string) return a.string.text().compare(b.string.text());
  if (a.kind == Kind::list && b.kind == Kind::list) {
    for (size_t i = 0; i < std::min(a.list->size(), b.list->size()); ++i)
      if (!equal((*a.list)[i], (*b.list)[i])) return compare((*a.list)[i], (*b.list)[i], line);
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size();
  }
  require_defined(a, line);
  require_defined(b, line);
  error(line, "'<' not supported between instances of '", type_name(a), "' and '", type_name(b), "'");
}

bool Renderer::contains(const Value& container, const Value& item, int line) const {
  switch (container.kind) {
    case Kind::string:
      if (item.kind != Kind::string)
        error(line, "'in <string>' requires string as left operand, not ", type_name(item));
      return container.string.text().find(item.string.text()) != std::string::npos;
    case Kind::list:
      return std::any_of(container.list->begin(), container.list->end(), [&](const Value& v) { return equal(v, item); });
    case Kind::dict:
    case Kind::namespace_object:
      return item.kind == Kind::string && find_key(*container.dict, item.string.text());
    case Kind::undefined: return false;
    default: error(line, "argument of type '", type_name(container), "' is not iterable");
  }
}

List Renderer::items_of(const Value& v, int line) const {
  switch (v.kind) {
    case Kind::list: return *v.list;
    case Kind::dict: {
      List keys;
      for (const auto& [key, value] : *v.dict) keys.push_back(Value::from_text(key, false));
      return keys;
    }
    case Kind::string: {
      List chars;
      const std::string& s = v.string.text();
      for (size_t pos = 0; pos < s.size();) {
        size_t len = char_length(s, pos);
        chars.push_back(Value::from_text(v.string.slice(pos, pos + len)));
        pos += len;
      }
      return chars;
    }
    case Kind::undefined: return {};  // jinja2's Undefined iterates as empty
    default: error(line, "'", type_name(v), "' object is not iterable");
  }
}

size_t Renderer::length_of(const Value& v, int line) const {
  switch (v.kind) {
    case Kind::string: return char_offsets(v.string.text()).size() - 1;
    case Kind::list: return v.list->size();
    case Kind::dict: return v.dict->size();
    case Kind::undefined: return 0;
    default: error(line, "object of type '", type_name(v), "' has no len()");
  }
}

// obj.name: jinja2 tries the Python attribute, then obj["name"]. Methods are only reached through calls (see
// eval of Op::call); plain data has no other attributes.
Value Renderer::attribute(const Value& subject, const std::string& name, int line) const {
  switch (subject.kind) {
    case Kind::undefined: error(line, subject.name);
    case Kind::dict:
    case Kind::namespace_object:
      if (const Value* v = find_key(*subject.dict, name)) return *v;
      return Value::undefined(cat("'", type_name(subject), " object' has no attribute '", name, "'"));
    default: return Value::undefined(cat("'", type_name(subject), " object' has no attribute '", name, "'"));
  }
}

// obj[key]: jinja2 tries obj[key], then (for a string key) the attribute.
Value Renderer::item(const Value& subject, const Value& key, int line) const {
  require_defined(subject, line);
  if ((subject.kind == Kind::list || subject.kind == Kind::string) && is_integral(key)) {
    int64_t n = static_cast<int64_t>(length_of(subject, line)), i = as_int(key);
    if (i < 0) i += n;
    if (i < 0 || i >= n)
      return Value::undefined(cat("'", type_name(subject), " object' has no element ", as_int(key)));
    if (subject.kind == Kind::list) return (*subject.list)[i];
    std::vector<size_t> offsets = char_offsets(subject.string.text());
    return Value::from_text(subject.string.slice(offsets[i], offsets[i + 1]));
  }
  if (key.kind == Kind::string) return attribute(subject, key.string.text(), line);
  return Value::undefined(cat("'", type_name(subject), " object' has no element ", text_of(key).text()));
}

Value Renderer::binary(const std::string& op, const Value& a, const Value& b, int line) const {
  require_defined(a, line);
  require_defined(b, line);
  auto type_error = [&]() -> Value {
    error(line, "unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b), "'");
  };
  if (op == "+") {
    if (a.kind == Kind::string && b.kind == Kind::string) {
      if (a.string.size() + b.string.size() > kMaxTextBytes) error(line, "'+' would build a string over 256 MiB");
      TaggedText s = a.string;
      s.append(b.string);
      return Value::from_text(std::move(s));
    }
    if (a.kind == Kind::list && b.kind == Kind::list) {
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      return Value::from_list(std::move(l));
    }
  }
  if (op == "*" && is_integral(b) && (a.kind == Kind::string || a.kind == Kind::list)) {
    int64_t n = std::max<int64_t>(0, as_int(b));
    if (n * static_cast<int64_t>(length_of(a, line)) > (1 << 24) ||
        (a.kind == Kind::string && static_cast<size_t>(n) * a.string.size() > kMaxTextBytes))
      error(line, "'*' would build a value over 16M items or 256 MiB");
    if (a.kind == Kind::string) {
      TaggedText s;
      for (int64_t i = 0; i < n; ++i) s.append(a.string);
      return Value::from_text(std::move(s));
    }
    List l;
    for (int64_t i = 0; i < n; ++i) l.insert(l.end(), a.list->begin(), a.list->end());
    return Value::from_list(std::move(l));
  }
  if (op == "%" && a.kind == Kind::string) unsupported(line, "'%' string formatting", "'~', '+', filters");
  if (!is_number(a) || !is_number(b)) return type_error();
  bool integers = is_integral(a) && is_integral(b);
  int64_t x = as_int(a), y = as_int(b);
  double p = as_double(a), q = as_double(b);
  if ((op == "/" || op == "//" || op == "%") && q == 0) error(line, "division by zero");
  if (op == "+") return integers ? Value::from_int(x + y) : Value::from_double(p + q);
  if (op == "-") return integers ? Value::from_int(x - y) : Value::from_double(p - q);
  if (op == "*") return integers ? Value::from_int(x * y) : Value::from_double(p * q);
  if (op == "/") return Value::from_double(p / q);
  if (op == "//") {
    if (integers) return Value::from_int(x / y - ((x % y != 0) && ((x < 0) != (y < 0))));
    return Value::from_double(std::floor(p / q));
  }
  if (op == "%") {
    if (integers) {
      int64_t m = x % y;
      return Value::from_int(m != 0 && ((m < 0) != (y < 0)) ? m + y : m);
    }
    double m = std::fmod(p, q);
    return Value::from_double(m != 0 && ((m < 0) != (q < 0)) ? m + q : m);
  }
  if (op == "**") {
    if (integers && y >= 0) {
      int64_t r = 1;
      for (int64_t i = 0; i < y; ++i) r *= x;
      return Value::from_int(r);
    }
    return Value::from_double(std::pow(p, q));
  }
  return type_error();
}

// ------------------------------------------------------------------------------------------------ globals

namespace {

std::string strftime_text(const std::string& format) {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::vector<char> buf(256 + format.size() * 8);
  size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
  return std::string(buf.data(), n);
}

const Dict& globals() {
  static const Dict g = [] {
    Dict d;
    d.emplace_back("range", make_builtin("range", [](Renderer& r, const Args& a, const Kwargs&, int line) {
      if (a.empty() || a.size() > 3 || !std::all_of(a.begin(), a.end(), is_integral))
        r.error(line, "range() takes 1 to 3 integers");
      int64_t start = a.size() > 1 ? as_int(a[0]) : 0, stop = as_int(a[a.size() > 1 ? 1 : 0]);
      int64_t step = a.size() > 2 ? as_int(a[2]) : 1;
      if (step == 0) r.error(line, "range() step must not be zero");
      List l;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l.size() >= (1u << 20)) r.error(line, "range() of more than 1M items");
        l.push_back(Value::from_int(i));
      }
      return Value::from_list(std::move(l));
    }));
    auto make_mapping = [](Renderer& r, const Args& a, const Kwargs& kw, int line, Kind kind) {
      Dict items;
      if (!a.empty()) {
        if (a.size() > 1 || a[0].kind != Kind::dict) r.error(line, "expected keyword arguments or one dict");
        items = *a[0].dict;
      }
      for (const auto& entry : kw) {
        auto it = std::find_if(items.begin(), items.end(), [&](const auto& e) { return e.first == entry.first; });
        if (it != items.end())
          it->second = entry.second;
        else
          items.push_back(entry);
      }
      Value v = Value::from_dict(std::move(items));
      v.kind = kind;
      return v;
    };
    d.emplace_back("namespace", make_builtin("namespace", [make_mapping](Renderer& r, const Args& a, const Kwargs& kw,
                                                                         int line) {
      return make_mapping(r, a, kw, line, Kind::namespace_object);
    }));
    d.emplace_back("dict", make_builtin("dict", [make_mapping](Renderer& r, const Args& a, const Kwargs& kw, int line) {
      return make_mapping(r, a, kw, line, Kind::dict);
    }));
    d.emplace_back("raise_exception", make_builtin("raise_exception", [](Renderer& r, const Args& a, const Kwargs&,
                                                                         int line) -> Value {
      r.error(line, "the chat template raised an error: ", a.empty() ? "" : r.text_of(a[0]).text());
    }));
    d.emplace_back("strftime_now", make_builtin("strftime_now", [](Renderer& r, const Args& a, const Kwargs&, int line) {
      if (a.size() != 1 || a[0].kind != Kind::string) r.error(line, "strftime_now() takes one format string");
      return Value::from_text(strftime_text(a[0].string.text()), false);
    }));
    return d;
  }();
  return g;
}

}  // namespace

Value Renderer::lookup(const std::string& name) const {
  for (size_t i = frames.size(); i-- > visible_from;)
    if (const Value* v = find_key(frames[i], name)) return *v;
  if (visible_from > 0)
    if (const Value* v = find_key(frames[0], name)) return *v;
  if (const Value* v = find_key(globals(), name)) return *v;
  return Value::undefined(cat("'", name, "' is undefined"));
}

Value Renderer::call(const Value& fn, const Args& args, const Kwargs& kwargs, int line) {
  if (fn.kind == Kind::undefined) error(line, fn.name);
  if (fn.kind != Kind::callable) error(line, "'", type_name(fn), "' object is not callable");
  const Callable& c = *fn.callable;
  if (!c.macro) return c.builtin(*this, args, kwargs, line);
  const Node& m = *c.macro;
  if (args.size() > m.targets.size())
    error(line, "macro '", m.text, "' takes not more than ", m.targets.size(), " argument(s)");
  if (++call_depth > 64) error(line, "macros nested more than 64 deep");
  Dict frame;
  for (size_t i = 0; i < m.targets.size(); ++i) {
    const Value* given = i < args.size() ? &args[i] : find_key(kwargs, m.targets[i]);
    frame.emplace_back(m.targets[i], given ? *given : m.exprs[i] ? eval(*m.exprs[i])
                                                                  : Value::undefined(cat("'", m.targets[i],
                                                                                         "' is undefined")));
  }
  for (const auto& [key, value] : kwargs)
    if (std::find(m.targets.begin(), m.targets.end(), key) == m.targets.end())
      error(line, "macro '", m.text, "' takes no keyword argument '", key, "'");
  size_t saved_visible = visible_from;
  frames.push_back(std::move(frame));
  visible_from = frames.size() - 1;
  TaggedText out;
  exec(m.bodies[0], out);
  frames.pop_back();
  visible_from = saved_visible;
  --call_depth;
  return Value::from_text(std::move(out));
}

// ------------------------------------------------------------------------------------------------ methods

namespace {

// s.split(sep, maxsplit) / s.split() (on runs of white space, no empty pieces), as Python.
List split_text(const TaggedText& s, const Value* sep, int64_t maxsplit, const Renderer& r, int line) {
  const std::string& t = s.text();
  List parts;
  if (!sep || sep->kind == Kind::none) {
    size_t pos = 0;
    while (true) {
      while (pos < t.size() && is_python_space(code_point(t, pos, char_length(t, pos)))) pos += char_length(t, pos);
      if (pos >= t.size()) break;
      size_t end = pos;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        end = strip_bounds(t, nullptr, false, true).second;
        parts.push_back(Value::from_text(s.slice(pos, end)));
        break;
      }
      while (end < t.size() && !is_python_space(code_point(t, end, char_length(t, end)))) end += char_length(t, end);
      parts.push_back(Value::from_text(s.slice(pos, end)));
      pos = end;
    }
    return parts;
  }
  if (sep->kind != Kind::string) r.error(line, "split(): the separator must be a string");
  const std::string& d = sep->string.text();
  if (d.empty()) r.error(line, "split(): empty separator");
  size_t pos = 0;
  for (size_t hit; (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) &&
                   (hit = t.find(d, pos)) != std::string::npos;
       pos = hit + d.size())
    parts.push_back(Value::from_text(s.slice(pos, hit)));
  parts.push_back(Value::from_text(s.slice(pos, t.size())));
  return parts;
}

TaggedText replace_text(const TaggedText& s, const TaggedText& old, const TaggedText& with, int64_t count) {
  const std::string& t = s.text();
  TaggedText out;
  size_t pos = 0;
  int64_t done = 0;
  if (old.size() == 0) {  // Python inserts `with` between characters (and at both ends)
    for (size_t offset : char_offsets(t)) {
      if (count >= 0 && done >= count) break;
      out.append(s.slice(pos, offset));
      out.append(with);
      pos = offset;
      ++done;
    }
    out.append(s.slice(pos, t.size()));
    return out;
  }
  for (size_t hit; (count < 0 || done < count) && (hit = t.find(old.text(), pos)) != std::string::npos;
       pos = hit + old.size(), ++done) {
    out.append(s.slice(pos, hit));
    out.append(with);
  }
  out.append(s.slice(pos, t.size()));
  return out;
}

// Case changes, ASCII only: non-ASCII text is refused rather than changed differently from Python.
TaggedText ascii_case(const TaggedText& s, const std::string& how, const Renderer& r, int line) {
  if (!is_ascii(s.text()))
    r.unsupported(line, how + " of non-ASCII text", "upper, lower, title, capitalize of ASCII text");
  TaggedText out;
  bool word_start = true;
  size_t index = 0;
  for (const auto& [run, data] : s.runs()) {
    std::string t = run;
    for (char& c : t) {
      bool upper = how == "upper" || ((how == "title" && word_start) || (how == "capitalize" && index == 0));
      c = upper ? static_cast<char>(toupper(static_cast<unsigned char>(c)))
                : static_cast<char>(tolower(static_cast<unsigned char>(c)));
      // jinja2's title starts a word after white space, '-', and opening brackets
      word_start = isspace(static_cast<unsigned char>(c)) || strchr("-({[<", c) != nullptr;
      ++index;
    }
    out.append(t, data);
  }
  return out;
}

TaggedText strip_text(const TaggedText& s, const Value* chars, bool left, bool right, const Renderer& r, int line) {
  std::string set;
  if (chars && chars->kind != Kind::none) {
    if (chars->kind != Kind::string) r.error(line, "strip(): the characters must be a string");
    set = chars->string.text();
  }
  auto [begin, end] = strip_bounds(s.text(), chars && chars->kind != Kind::none ? &set : nullptr, left, right);
  return s.slice(begin, end);
}

bool affix_matches(const Value& s, const Value& affix, bool prefix, const Renderer& r, int line) {
  if (affix.kind == Kind::list) {
    return std::any_of(affix.list->begin(), affix.list->end(),
                       [&](const Value& a) { return affix_matches(s, a, prefix, r, line); });
  }
  if (affix.kind != Kind::string) r.error(line, prefix ? "startswith" : "endswith", "(): expected a string");
  const std::string &t = s.string.text(), &a = affix.string.text();
  if (a.size() > t.size()) return false;
  return prefix ? t.compare(0, a.size(), a) == 0 : t.compare(t.size() - a.size(), a.size(), a) == 0;
}

const char* const kStringMethods = "str.strip, lstrip, rstrip, split, splitlines, startswith, endswith, replace, "
                                   "upper, lower, title, capitalize, find, count, join, removeprefix, removesuffix; "
                                   "dict.items, keys, values, get";

}  // namespace

Value Renderer::call_method(const Value& s, const std::string& m, const Args& args, const Kwargs& kw, int line) {
  auto arg = [&](size_t i, const char* name) { return argument(args, kw, i, name); };
  auto text_arg = [&](size_t i, const char* name) -> const TaggedText& {
    const Value* v = arg(i, name);
    if (!v || v->kind != Kind::string) error(line, m, "(): argument '", name, "' must be a string");
    return v->string;
  };
  auto int_arg = [&](size_t i, const char* name, int64_t fallback) {
    const Value* v = arg(i, name);
    if (!v) return fallback;
    if (!is_integral(*v)) error(line, m, "(): argument '", name, "' must be an integer");
    return as_int(*v);
  };
  if (s.kind == Kind::string) {
    const TaggedText& t = s.string;
    if (m == "strip" || m == "lstrip" || m == "rstrip")
      return Value::from_text(strip_text(t, arg(0, "chars"), m != "rstrip", m != "lstrip", *this, line));
    if (m == "split") return Value::from_list(split_text(t, arg(0, "sep"), int_arg(1, "maxsplit", -1), *this, line));
    if (m == "splitlines") {
      List lines;
      bool keep = arg(0, "keepends") && truthy(*arg(0, "keepends"));
      for (auto [b, e, after] : split_lines(t.text())) lines.push_back(Value::from_text(t.slice(b, keep ? after : e)));
      return Value::from_list(std::move(lines));
    }
    if (m == "startswith" || m == "endswith") {
      const Value* a = arg(0, "prefix");
      if (!a) error(line, m, "() takes one argument");
      return Value::from_bool(affix_matches(s, *a, m == "startswith", *this, line));
    }
    if (m == "replace")
      return Value::from_text(replace_text(t, text_arg(0, "old"), text_arg(1, "new"), int_arg(2, "count", -1)));
    if (m == "upper" || m == "lower" || m == "title" || m == "capitalize")
      return Value::from_text(ascii_case(t, m, *this, line));
    if (m == "find" || m == "count") {
      const std::string& needle = text_arg(0, "sub").text();
      if (m == "find") {
        size_t hit = t.text().find(needle);
        if (hit == std::string::npos) return Value::from_int(-1);
        return Value::from_int(static_cast<int64_t>(char_offsets(t.text().substr(0, hit)).size() - 1));
      }
      if (needle.empty()) return Value::from_int(static_cast<int64_t>(char_offsets(t.text()).size()));
      int64_t n = 0;
      for (size_t pos = t.text().find(needle); pos != std::string::npos; pos = t.text().find(needle, pos + needle.size()))
        ++n;
      return Value::from_int(n);
    }
    if (m == "join") {
      const Value* items = arg(0, "iterable");
      if (!items) error(line, "join() takes one argument");
      TaggedText out;
      bool first = true;
      for (const Value& v : items_of(*items, line)) {
        if (v.kind != Kind::string) error(line, "join(): expected str items, found ", type_name(v));
        if (!first) out.append(t);
        first = false;
        out.append(v.string);
      }
      return Value::from_text(std::move(out));
    }
    if (m == "removeprefix" || m == "removesuffix") {
      const TaggedText& a = text_arg(0, m == "removeprefix" ? "prefix" : "suffix");
      if (!affix_matches(s, Value::from_text(a), m == "removeprefix", *this, line)) return s;
      return Value::from_text(m == "removeprefix" ? t.slice(a.size(), t.size()) : t.slice(0, t.size() - a.size()));
    }
  } else if (s.kind == Kind::dict) {
    if (m == "items" || m == "keys" || m == "values") {
      List out;
      for (const auto& [key, value] : *s.dict) {
        if (m == "items")
          out.push_back(make_tuple({Value::from_text(key, false), value}));
        else
          out.push_back(m == "keys" ? Value::from_text(key, false) : value);
      }
      return Value::from_list(std::move(out));
    }
    if (m == "get") {
      const TaggedText& key = text_arg(0, "key");
      if (const Value* v = find_key(*s.dict, key.text())) return *v;
      const Value* fallback = arg(1, "default");
      return fallback ? *fallback : Value::none();
    }
  }
  if (s.kind == Kind::dict || s.kind == Kind::namespace_object) {  // a callable held by key: loop.cycle(...)
    Value held = attribute(s, m, line);
    if (held.kind == Kind::callable || s.kind == Kind::namespace_object) return call(held, args, kw, line);
  }
  require_defined(s, line);
  unsupported(line, cat(type_name(s), ".", m, "()"), kStringMethods);
}

// ------------------------------------------------------------------------------------------------ filters, tests

namespace {

const Value& required(const Value* v, const char* filter, Renderer& r, int line) {
  if (!v) r.error(line, filter, ": missing argument");
  return *v;
}

List select_items(Renderer& r, const Value& subject, const Args& a, int line, bool by_attribute, bool keep) {
  // select(test, args...) / selectattr(attribute, test, args...), and their reject twins
  size_t first_test = by_attribute ? 1 : 0;
  if (by_attribute && (a.empty() || a[0].kind != Kind::string)) r.error(line, "selectattr: attribute name expected");
  std::string test_name;
  if (a.size() > first_test) {
    if (a[first_test].kind != Kind::string) r.error(line, "select: test name expected");
    test_name = a[first_test].string.text();
    if (!tests().count(test_name)) r.unsupported(line, "test " + test_name, names_of(tests()));
  }
  Args test_args(a.begin() + std::min(a.size(), first_test + 1), a.end());
  List out;
  for (const Value& item : r.items_of(subject, line)) {
    Value v = by_attribute ? r.attribute(item, a[0].string.text(), line) : item;
    bool pass = test_name.empty() ? r.truthy(v) : tests().at(test_name)(r, v, test_args, line);
    if (pass == keep) out.push_back(item);
  }
  return out;
}

Value first_or_last(Renderer& r, const Value& v, int line, bool first) {
  List items = r.items_of(v, line);
  if (items.empty()) return Value::undefined("No item: the sequence was empty");
  return first ? items.front() : items.back();
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> f = {
      {"abs", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         if (!is_number(v)) r.error(line, "abs: expected a number, found ", type_name(v));
         return is_integral(v) ? Value::from_int(std::llabs(as_int(v))) : Value::from_double(std::fabs(v.floating));
       }},
      {"capitalize", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_text(ascii_case(r.text_of(v), "capitalize", r, line));
       }},
      {"count", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_int(static_cast<int64_t>(r.length_of(v, line)));
       }},
      {"default", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int) {
         const Value* fallback = argument(a, kw, 0, "default_value");
         const Value* boolean = argument(a, kw, 1, "boolean");
         bool use = v.kind == Kind::undefined || (boolean && r.truthy(*boolean) && !r.truthy(v));
         return use ? (fallback ? *fallback : Value::from_text("", false)) : v;
       }},
      {"d", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         return filters().at("default")(r, v, a, kw, line);
       }},
      {"first", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return first_or_last(r, v, line, true);
       }},
      {"float", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int) {
         const Value* fallback = argument(a, kw, 0, "default");
         if (is_number(v)) return Value::from_double(as_double(v));
         if (v.kind == Kind::string) {
           std::string t = python_strip(v.string.text());
           char* end = nullptr;
           double d = strtod(t.c_str(), &end);
           if (!t.empty() && end == t.c_str() + t.size()) return Value::from_double(d);
         }
         (void)r;
         return fallback ? *fallback : Value::from_double(0.0);
       }},
      {"indent", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         const Value* width = argument(a, kw, 0, "width");
         const Value* first = argument(a, kw, 1, "first");
         const Value* blank = argument(a, kw, 2, "blank");
         TaggedText pad;
         if (!width) pad.append("    ", false);
         else if (width->kind == Kind::string) pad = width->string;
         else if (is_integral(*width)) pad.append(std::string(std::max<int64_t>(0, as_int(*width)), ' '), false);
         else r.error(line, "indent: width must be an integer or a string");
         TaggedText s = r.text_of(v);
         s.append("\n", false);  // jinja2 appends a newline before splitting, so a trailing one is kept
         TaggedText out;
         std::vector<std::array<size_t, 3>> lines = split_lines(s.text());
         for (size_t i = 0; i < lines.size(); ++i) {
           auto [b, e, after] = lines[i];
           if (i > 0) {
             out.append("\n", false);
             if ((blank && r.truthy(*blank)) || e > b) out.append(pad);
           }
           out.append(s.slice(b, e));
         }
         if (first && r.truthy(*first)) {
           TaggedText with_pad = pad;
           with_pad.append(out);
           out = std::move(with_pad);
         }
         return Value::from_text(std::move(out));
       }},
      {"int", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int) {
         const Value* fallback = argument(a, kw, 0, "default");
         if (is_integral(v)) return Value::from_int(as_int(v));
         if (v.kind == Kind::floating && std::isfinite(v.floating)) return Value::from_int(static_cast<int64_t>(v.floating));
         if (v.kind == Kind::string) {
           std::string t = python_strip(v.string.text());
           char* end = nullptr;
           errno = 0;
           long long i = strtoll(t.c_str(), &end, 10);
           if (!t.empty() && end == t.c_str() + t.size() && errno == 0) return Value::from_int(i);
           double d = strtod(t.c_str(), &end);
           if (!t.empty() && end == t.c_str() + t.size() && std::isfinite(d)) return Value::from_int(static_cast<int64_t>(d));
         }
         (void)r;
         return fallback ? *fallback : Value::from_int(0);
       }},
      {"items", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         if (v.kind == Kind::undefined) return Value::from_list({});
         if (v.kind != Kind::dict) r.error(line, "items: expected a dict, found ", type_name(v));
         return r.call_method(v, "items", {}, {}, line);
       }},
      {"join", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         const Value* sep = argument(a, kw, 0, "d");
         const Value* attr = argument(a, kw, 1, "attribute");
         TaggedText out, separator = sep ? r.text_of(*sep) : TaggedText();
         bool first = true;
         for (const Value& item : r.items_of(v, line)) {
           if (!first) out.append(separator);
           first = false;
           out.append(r.text_of(attr ? r.attribute(item, r.text_of(*attr).text(), line) : item));
         }
         return Value::from_text(std::move(out));
       }},
      {"last", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return first_or_last(r, v, line, false);
       }},
      {"length", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_int(static_cast<int64_t>(r.length_of(v, line)));
       }},
      {"list", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_list(r.items_of(v, line));
       }},
      {"lower", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_text(ascii_case(r.text_of(v), "lower", r, line));
       }},
      {"map", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         List out;
         const Value* attr = find_key(kw, "attribute");
         if (!attr && (a.empty() || a[0].kind != Kind::string)) r.error(line, "map: give a filter name or attribute=");
         std::string name = attr ? "" : a[0].string.text();
         if (!attr && !filters().count(name)) r.unsupported(line, "filter " + name, names_of(filters()));
         Args rest(a.begin() + (attr ? 0 : 1), a.end());
         const Value* fallback = find_key(kw, "default");
         for (const Value& item : r.items_of(v, line)) {
           if (attr) {
             Value got = r.attribute(item, r.text_of(*attr).text(), line);
             out.push_back(got.kind == Kind::undefined && fallback ? *fallback : got);
           } else {
             out.push_back(filters().at(name)(r, item, rest, {}, line));
           }
         }
         return Value::from_list(std::move(out));
       }},
      {"reject", [](Renderer& r, const Value& v, const Args& a, const Kwargs&, int line) {
         return Value::from_list(select_items(r, v, a, line, false, false));
       }},
      {"rejectattr", [](Renderer& r, const Value& v, const Args& a, const Kwargs&, int line) {
         return Value::from_list(select_items(r, v, a, line, true, false));
       }},
      {"replace", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         const Value& old = required(argument(a, kw, 0, "old"), "replace", r, line);
         const Value& with = required(argument(a, kw, 1, "new"), "replace", r, line);
         const Value* count = argument(a, kw, 2, "count");
         return Value::from_text(replace_text(r.text_of(v), r.text_of(old), r.text_of(with),
                                              count && is_integral(*count) ? as_int(*count) : -1));
       }},
      {"reverse", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         List items = r.items_of(v, line);
         std::reverse(items.begin(), items.end());
         if (v.kind != Kind::string) return Value::from_list(std::move(items));
         TaggedText out;
         for (const Value& c : items) out.append(c.string);
         return Value::from_text(std::move(out));
       }},
      {"safe", [](Renderer&, const Value& v, const Args&, const Kwargs&, int) { return v; }},
      {"select", [](Renderer& r, const Value& v, const Args& a, const Kwargs&, int line) {
         return Value::from_list(select_items(r, v, a, line, false, true));
       }},
      {"selectattr", [](Renderer& r, const Value& v, const Args& a, const Kwargs&, int line) {
         return Value::from_list(select_items(r, v, a, line, true, true));
       }},
      {"string", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int) {
         return Value::from_text(r.text_of(v));
       }},
      {"title", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_text(ascii_case(r.text_of(v), "title", r, line));
       }},
      {"tojson", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         // transformers' tojson: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys)
         const Value* ensure_ascii = find_key(kw, "ensure_ascii");
         if (ensure_ascii && r.truthy(*ensure_ascii)) r.unsupported(line, "tojson(ensure_ascii=true)", "tojson(indent=N, separators=(a, b), sort_keys=bool)");
         const Value* indent = argument(a, kw, 0, "indent");
         const Value* separators = find_key(kw, "separators");
         const Value* sort_keys = find_key(kw, "sort_keys");
         int width = -1;
         if (indent && indent->kind != Kind::none) {
           if (!is_integral(*indent)) r.error(line, "tojson: indent must be an integer");
           width = static_cast<int>(std::max<int64_t>(0, as_int(*indent)));
         }
         std::string item_sep = width >= 0 ? "," : ", ", key_sep = ": ";
         if (separators && separators->kind != Kind::none) {
           if (separators->kind != Kind::list || separators->list->size() != 2) r.error(line, "tojson: separators must be a pair");
           item_sep = r.text_of((*separators->list)[0]).text();
           key_sep = r.text_of((*separators->list)[1]).text();
         }
         TaggedText out;
         r.json_into(v, out, width, 0, item_sep, key_sep, sort_keys && r.truthy(*sort_keys), line);
         return Value::from_text(std::move(out));
       }},
      {"trim", [](Renderer& r, const Value& v, const Args& a, const Kwargs& kw, int line) {
         return Value::from_text(strip_text(r.text_of(v), argument(a, kw, 0, "chars"), true, true, r, line));
       }},
      {"upper", [](Renderer& r, const Value& v, const Args&, const Kwargs&, int line) {
         return Value::from_text(ascii_case(r.text_of(v), "upper", r, line));
       }},
  };
  return f;
}

bool compare_test(Renderer& r, const Value& v, const Args& a, int line, const char* name, bool (*pass)(int)) {
  if (a.size() != 1) r.error(line, "test '", name, "' takes one argument");
  return pass(r.compare(v, a[0], line));
}

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> t = {
      {"boolean", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::boolean; }},
      {"callable", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::callable; }},
      {"defined", [](Renderer&, const Value& v, const Args&, int) { return v.kind != Kind::undefined; }},
      {"divisibleby", [](Renderer& r, const Value& v, const Args& a, int line) {
         if (a.size() != 1 || !is_integral(a[0]) || !is_integral(v) || as_int(a[0]) == 0)
           r.error(line, "divisibleby: integers expected");
         return as_int(v) % as_int(a[0]) == 0;
       }},
      {"eq", [](Renderer& r, const Value& v, const Args& a, int line) {
         if (a.size() != 1) r.error(line, "test 'eq' takes one argument");
         return r.equal(v, a[0]);
       }},
      {"equalto", [](Renderer& r, const Value& v, const Args& a, int line) { return tests().at("eq")(r, v, a, line); }},
      {"even", [](Renderer& r, const Value& v, const Args&, int line) {
         if (!is_integral(v)) r.error(line, "even: an integer expected");
         return as_int(v) % 2 == 0;
       }},
      {"false", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::boolean && !v.boolean; }},
      {"float", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::floating; }},
      {"ge", [](Renderer& r, const Value& v, const Args& a, int line) {
         return compare_test(r, v, a, line, "ge", [](int c) { return c >= 0; });
       }},
      {"gt", [](Renderer& r, const Value& v, const Args& a, int line) {
         return compare_test(r, v, a, line, "gt", [](int c) { return c > 0; });
       }},
      {"in", [](Renderer& r, const Value& v, const Args& a, int line) {
         if (a.size() != 1) r.error(line, "test 'in' takes one argument");
         return r.contains(a[0], v, line);
       }},
      {"integer", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::integer; }},
      {"iterable", [](Renderer&, const Value& v, const Args&, int) {
         return v.kind == Kind::string || v.kind == Kind::list || v.kind == Kind::dict;
       }},
      {"le", [](Renderer& r, const Value& v, const Args& a, int line) {
         return compare_test(r, v, a, line, "le", [](int c) { return c <= 0; });
       }},
      {"lt", [](Renderer& r, const Value& v, const Args& a, int line) {
         return compare_test(r, v, a, line, "lt", [](int c) { return c < 0; });
       }},
      {"mapping", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::dict; }},
      {"ne", [](Renderer& r, const Value& v, const Args& a, int line) { return !tests().at("eq")(r, v, a, line); }},
      {"none", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::none; }},
      {"number", [](Renderer&, const Value& v, const Args&, int) { return is_number(v); }},
      {"odd", [](Renderer& r, const Value& v, const Args&, int line) {
         if (!is_integral(v)) r.error(line, "odd: an integer expected");
         return as_int(v) % 2 != 0;
       }},
      {"sequence", [](Renderer&, const Value& v, const Args&, int) {
         return v.kind == Kind::string || v.kind == Kind::list || v.kind == Kind::dict;
       }},
      {"string", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::string; }},
      {"true", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::boolean && v.boolean; }},
      {"undefined", [](Renderer&, const Value& v, const Args&, int) { return v.kind == Kind::undefined; }},
  };
  return t;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ evaluator

Value Renderer::eval(const Expr& e) {
  switch (e.op) {
    case Op::literal: return e.value;
    case Op::name: return lookup(e.name);
    case Op::list: {
      List items;
      for (const auto& a : e.args) items.push_back(eval(*a));
      return e.name == "tuple" ? make_tuple(std::move(items)) : Value::from_list(std::move(items));
    }
    case Op::dict: {
      Dict items;
      for (size_t i = 0; i < e.args.size(); i += 2) {
        Value key = eval(*e.args[i]);
        if (key.kind != Kind::string) unsupported(e.line, "dict literal with a non-string key", "string keys");
        Value value = eval(*e.args[i + 1]);
        auto it = std::find_if(items.begin(), items.end(), [&](auto& kv) { return kv.first == key.string.text(); });
        if (it != items.end())
          it->second = std::move(value);
        else
          items.emplace_back(key.string.text(), std::move(value));
      }
      return Value::from_dict(std::move(items));
    }
    case Op::attr: return attribute(eval(*e.args[0]), e.name, e.line);
    case Op::item: return item(eval(*e.args[0]), eval(*e.args[1]), e.line);
    case Op::slice: {
      Value subject = eval(*e.args[0]);
      require_defined(subject, e.line);
      Value parts[3];
      const Value* p[3] = {nullptr, nullptr, nullptr};
      for (int i = 0; i < 3; ++i)
        if (e.args[1 + i]) {
          parts[i] = eval(*e.args[1 + i]);
          p[i] = &parts[i];
        }
      if (subject.kind == Kind::list) {
        List out;
        for (int64_t i : slice_positions(p[0], p[1], p[2], subject.list->size(), *this, e.line))
          out.push_back((*subject.list)[i]);
        return Value::from_list(std::move(out));
      }
      if (subject.kind == Kind::string) {
        std::vector<size_t> offsets = char_offsets(subject.string.text());
        TaggedText out;
        for (int64_t i : slice_positions(p[0], p[1], p[2], offsets.size() - 1, *this, e.line))
          out.append(subject.string.slice(offsets[i], offsets[i + 1]));
        return Value::from_text(std::move(out));
      }
      error(e.line, "'", type_name(subject), "' object is not subscriptable");
    }
    case Op::call: {
      Args args;
      Kwargs kwargs;
      for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
      for (const auto& [key, value] : e.kwargs) kwargs.emplace_back(key, eval(*value));
      const Expr& callee = *e.args[0];
      if (callee.op == Op::attr) {  // a method: obj.name(...)
        Value subject = eval(*callee.args[0]);
        return call_method(subject, callee.name, args, kwargs, e.line);
      }
      Value fn = eval(callee);
      if (fn.kind == Kind::undefined && callee.op == Op::name &&
          (callee.name == "cycler" || callee.name == "joiner" || callee.name == "lipsum"))
        unsupported(e.line, callee.name + "()", "range, namespace, dict, raise_exception, strftime_now, macros");
      return call(fn, args, kwargs, e.line);
    }
    case Op::filter: {
      Value subject = eval(*e.args[0]);
      Args args;
      Kwargs kwargs;
      for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
      for (const auto& [key, value] : e.kwargs) kwargs.emplace_back(key, eval(*value));
      return filters().at(e.name)(*this, subject, args, kwargs, e.line);
    }
    case Op::test: {
      Value subject = eval(*e.args[0]);
      Args args;
      for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
      return Value::from_bool(tests().at(e.name)(*this, subject, args, e.line) != e.negated);
    }
    case Op::negate:
    case Op::plus: {
      Value v = eval(*e.args[0]);
      require_defined(v, e.line);
      if (!is_number(v)) error(e.line, "bad operand type for unary ", e.op == Op::negate ? "-" : "+", ": '", type_name(v), "'");
      if (e.op == Op::plus) return is_integral(v) ? Value::from_int(as_int(v)) : v;
      return is_integral(v) ? Value::from_int(-as_int(v)) : Value::from_double(-v.floating);
    }
    case Op::not_: return Value::from_bool(!truthy(eval(*e.args[0])));
    case Op::and_: {
      Value a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    case Op::or_: {
      Value a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    case Op::binary: return binary(e.name, eval(*e.args[0]), eval(*e.args[1]), e.line);
    case Op::compare: {
      Value left = eval(*e.args[0]);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.args[i + 1]);
        const std::string& op = e.ops[i];
        bool pass;
        if (op == "==") pass = equal(left, right);
        else if (op == "!=") pass = !equal(left, right);
        else if (op == "in") pass = contains(right, left, e.line);
        else if (op == "not in") pass = !contains(right, left, e.line);
        else {
          int c = compare(left, right, e.line);
          pass = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
        }
        if (!pass) return Value::from_bool(false);
        left = std::move(right);
      }
      return Value::from_bool(true);
    }
    case Op::concat: {
      TaggedText out;
      for (const auto& a : e.args) out.append(text_of(eval(*a)));
      return Value::from_text(std::move(out));
    }
    case Op::conditional:
      if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
      return e.args[2] ? eval(*e.args[2]) : Value::undefined("the conditional expression had no else branch");
  }
  error(e.line, "internal error: unknown expression");
}

Flow Renderer::exec(const std::vector<Node>& nodes, TaggedText& out) {
  for (const Node& n : nodes) {
    switch (n.type) {
      case Stmt::text: out.append(n.text, false); break;
      case Stmt::output:
        out.append(text_of(eval(*n.exprs[0])));
        if (out.size() > kMaxTextBytes) error(n.line, "the template's output passed 256 MiB");
        break;
      case Stmt::if_: {
        size_t branch = 0;
        while (branch < n.exprs.size() && !truthy(eval(*n.exprs[branch]))) ++branch;
        if (branch < n.bodies.size()) {
          Flow f = exec(n.bodies[branch], out);
          if (f != Flow::normal) return f;
        }
        break;
      }
      case Stmt::for_: {
        Value iterable = eval(*n.exprs[0]);
        auto bind = [&](Dict& frame, const Value& item) {
          if (n.targets.size() == 1) {
            frame.emplace_back(n.targets[0], item);
            return;
          }
          if (item.kind != Kind::list || item.list->size() != n.targets.size())
            error(n.line, "cannot unpack ", text_of(item).text(), " into ", n.targets.size(), " names");
          for (size_t i = 0; i < n.targets.size(); ++i) frame.emplace_back(n.targets[i], (*item.list)[i]);
        };
        List items;
        for (Value& item : items_of(iterable, n.line)) {
          if (n.exprs[1]) {  // {% for x in xs if cond %}: the loop sees only the items that pass
            Dict probe;
            bind(probe, item);
            frames.push_back(std::move(probe));
            bool keep = truthy(eval(*n.exprs[1]));
            frames.pop_back();
            if (!keep) continue;
          }
          items.push_back(std::move(item));
        }
        if (items.empty()) {
          Flow f = exec(n.bodies[1], out);
          if (f != Flow::normal) return f;
          break;
        }
        const int64_t length = static_cast<int64_t>(items.size());
        auto index = std::make_shared<int64_t>(0);  // loop.cycle reads the current iteration
        Value cycle = make_builtin("loop.cycle", [index](Renderer& r, const Args& a, const Kwargs&, int line) {
          if (a.empty()) r.error(line, "loop.cycle() needs at least one value");
          return a[static_cast<size_t>(*index) % a.size()];
        });
        for (int64_t i = 0; i < length; ++i) {
          *index = i;
          if (++iterations > kMaxLoopIterations) error(n.line, "the template ran more than 1M loop iterations");
          Dict loop = {{"index", Value::from_int(i + 1)},          {"index0", Value::from_int(i)},
                       {"revindex", Value::from_int(length - i)},  {"revindex0", Value::from_int(length - i - 1)},
                       {"first", Value::from_bool(i == 0)},        {"last", Value::from_bool(i == length - 1)},
                       {"length", Value::from_int(length)}};
          if (i > 0) loop.emplace_back("previtem", items[i - 1]);
          if (i + 1 < length) loop.emplace_back("nextitem", items[i + 1]);
          loop.emplace_back("cycle", cycle);
          Dict frame;
          bind(frame, items[i]);
          frame.emplace_back("loop", Value::from_dict(std::move(loop)));
          frames.push_back(std::move(frame));
          Flow f = exec(n.bodies[0], out);
          frames.pop_back();
          if (f == Flow::break_loop) break;
        }
        break;
      }
      case Stmt::set: {
        Value v = eval(*n.exprs[0]);
        if (n.targets.size() == 1) {
          assign(n.targets[0], std::move(v));
          break;
        }
        if (v.kind != Kind::list || v.list->size() != n.targets.size())
          error(n.line, "cannot unpack ", text_of(v).text(), " into ", n.targets.size(), " names");
        for (size_t i = 0; i < n.targets.size(); ++i) assign(n.targets[i], (*v.list)[i]);
        break;
      }
      case Stmt::set_attribute: {
        Value ns = lookup(n.targets[0]);
        if (ns.kind != Kind::namespace_object)
          error(n.line, "cannot assign attribute '", n.text, "' on '", n.targets[0], "': it is not a namespace()");
        Value v = eval(*n.exprs[0]);
        auto it = std::find_if(ns.dict->begin(), ns.dict->end(), [&](auto& kv) { return kv.first == n.text; });
        if (it != ns.dict->end())
          it->second = std::move(v);
        else
          ns.dict->emplace_back(n.text, std::move(v));
        break;
      }
      case Stmt::set_block: {
        TaggedText captured;
        exec(n.bodies[0], captured);
        assign(n.targets[0], Value::from_text(std::move(captured)));
        break;
      }
      case Stmt::macro: {
        Value v;
        v.kind = Kind::callable;
        auto c = std::make_shared<Callable>();
        c->name = n.text;
        c->macro = &n;
        v.callable = std::move(c);
        assign(n.text, std::move(v));
        break;
      }
      case Stmt::break_: return Flow::break_loop;
      case Stmt::continue_: return Flow::continue_loop;
    }
  }
  return Flow::normal;
}

// ------------------------------------------------------------------------------------------------ Template

Template::Template(const std::string& source, std::string origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = std::move(origin);
  utf8_validate(source, impl->origin.c_str());
  impl->nodes = Parser(Lexer(source, impl->origin).run(), impl->origin).parse_template();
  impl_ = std::move(impl);
}

Template::~Template() = default;

const std::string& Template::origin() const { return impl_->origin; }

TaggedText Template::render(const Dict& variables) const {
  Renderer r{impl_->origin, {variables}};
  TaggedText out;
  r.exec(impl_->nodes, out);
  return out;
}

std::string python_strip(std::string_view text) {
  auto [begin, end] = strip_bounds(text, nullptr, true, true);
  return std::string(text.substr(begin, end - begin));
}

}  // namespace stapo::jinja
