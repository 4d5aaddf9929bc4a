// A Jinja interpreter for the subset Hugging Face chat templates use, rendering what transformers'
// apply_chat_template renders: jinja2 with trim_blocks, lstrip_blocks and the loop controls, plus HF's globals
// (raise_exception, strftime_now, namespace, dict) and HF's tojson (ensure_ascii=False). Values follow Python's
// rules (str(), repr(), ==, truthiness, // and %). What is supported and what is refused: docs/tokenizer.md.
//
// Every string remembers which of its bytes came from the caller's data (message contents) and which from the
// template (its literals, bos_token, numbers it prints), through concatenation, slicing and filters, so that the
// rendered text can be encoded with special tokens recognised only in the template's own bytes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stapo::jinja {

// Text whose bytes are tagged by origin: the template, or data.
class TaggedText {
 public:
  TaggedText() = default;
  TaggedText(std::string_view text, bool data) { append(text, data); }
  const std::string& text() const { return text_; }
  size_t size() const { return text_.size(); }
  void append(std::string_view text, bool data);
  void append(const TaggedText& other);
  TaggedText slice(size_t begin, size_t end) const;  // byte offsets
  // The maximal stretches of one origin, in order: (text, from data).
  std::vector<std::pair<std::string, bool>> runs() const;

 private:
  std::string text_;
  std::vector<std::pair<size_t, bool>> runs_;  // (end offset, from data); ends increase
};

struct Value;
struct Callable;  // a macro, a bound method or a global function (jinja.cpp)
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // in insertion order, as Python's dict

struct Value {
  enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, namespace_object, callable };
  Kind kind = Kind::undefined;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0;
  TaggedText string;
  std::shared_ptr<List> list;                // list, tuple
  bool tuple = false;                        // a list that prints as a tuple: (1, 2)
  std::shared_ptr<Dict> dict;                // dict, namespace (shared: a namespace is assigned through)
  std::shared_ptr<const Callable> callable;  // callable
  std::string name;                          // undefined: what was looked up, for messages

  static Value none();
  static Value from_bool(bool v);
  static Value from_int(int64_t v);
  static Value from_double(double v);
  static Value from_text(std::string_view text, bool data = false);
  static Value from_text(TaggedText text);
  static Value from_list(List items);
  static Value from_dict(Dict items);
  static Value undefined(std::string what);
};

class Template {
 public:
  // Parses `source`. `origin` (a file name) starts every message: "<origin>:<line>: ...". A construct outside the
  // subset is a stapo::Error here, naming it and what is supported, before anything renders.
  Template(const std::string& source, std::string origin);
  ~Template();
  // Renders as jinja2's template.render(**variables). Errors (raise_exception, type errors, undefined values
  // used) are a stapo::Error naming the origin and line.
  TaggedText render(const Dict& variables) const;
  const std::string& origin() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Python's str.strip() with no argument (Unicode white space and U+001C..U+001F).
std::string python_strip(std::string_view text);

}  // namespace stapo::jinja
