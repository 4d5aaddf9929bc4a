// The Jinja interpreter against transformers' rendering (tests/fixtures/tokenizer/jinja_templates.json from
// dev/reference/make_template_fixtures.py: templates written there, one or a few constructs each, rendered by
// jinja2 in HF's environment), plus what only we define: the origin tags of the output, and the errors for
// constructs outside the subset.
#include <gtest/gtest.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "tests/test_util.h"
#include "tokenizer/jinja.h"

namespace {

using stapo::jinja::Dict;
using stapo::jinja::List;
using stapo::jinja::TaggedText;
using stapo::jinja::Template;
using stapo::jinja::Value;

using Json = nlohmann::ordered_json;  // keys in file order, as Python's dicts

// JSON → a template variable; strings from the messages are data, all others template text.
Value to_value(const Json& j, bool data) {
  switch (j.type()) {
    case Json::value_t::null: return Value::none();
    case Json::value_t::boolean: return Value::from_bool(j.get<bool>());
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return Value::from_int(j.get<int64_t>());
    case Json::value_t::number_float: return Value::from_double(j.get<double>());
    case Json::value_t::string: return Value::from_text(j.get<std::string>(), data);
    case Json::value_t::array: {
      List items;
      for (const auto& item : j) items.push_back(to_value(item, data));
      return Value::from_list(std::move(items));
    }
    default: {
      Dict items;
      for (const auto& [key, value] : j.items()) items.emplace_back(key, to_value(value, data));
      return Value::from_dict(std::move(items));
    }
  }
}

Dict variables_of(const Json& j) {
  Dict variables;
  for (const auto& [key, value] : j.items()) variables.emplace_back(key, to_value(value, key == "messages"));
  return variables;
}

std::string render(const std::string& source, const Dict& variables = {}) {
  return Template(source, "t.jinja").render(variables).text();
}

TEST(Jinja, ConstructsRenderAsTransformers) {
  auto fixture = Json::parse(stapo::read_text_file(stapo::test::fixture_path("tokenizer/jinja_templates.json")));
  ASSERT_EQ(fixture.at("version"), 1);
  int rendered = 0, raised = 0;
  for (const auto& c : fixture.at("constructs")) {
    const std::string name = c.at("name");
    Dict variables = variables_of(c.at("variables"));
    if (c.contains("text")) {
      std::string text;
      EXPECT_NO_THROW(text = render(c.at("template"), variables)) << name;
      EXPECT_EQ(text, c.at("text").get<std::string>()) << name;
      ++rendered;
    } else {
      std::string msg = stapo::test::error_message([&] { render(c.at("template"), variables); });
      EXPECT_NE(msg.find(c.at("error").get<std::string>()), std::string::npos) << name << ": " << msg;
      EXPECT_EQ(msg.rfind("t.jinja:", 0), 0u) << msg;  // the origin and line come first
      ++raised;
    }
  }
  EXPECT_GE(rendered, 40);
  EXPECT_GE(raised, 2);
}

// Message bytes stay data through trim, concatenation, slicing, replace, tojson and macros; template literals
// and the special-token variables stay template text.
TEST(Jinja, OutputKnowsWhichBytesCameFromData) {
  Template t("{% macro wrap(x) %}<b>{{ x }}</b>{% endmacro %}{{ bos_token }}"
             "{% for m in messages %}{{ '<|start|>' + m.role + '\\n' + m.content | trim }}"
             "{{ wrap(m.content[1:3]) }}{{ m.content.replace('a', '<|x|>') }}{{ m | tojson }}{% endfor %}",
             "t.jinja");
  Dict variables = {{"bos_token", Value::from_text("<s>", false)},
                    {"messages", Value::from_list({to_value(Json{{"role", "user"}, {"content", " <|a|> "}}, true)})}};
  TaggedText out = t.render(variables);
  std::string template_bytes, data_bytes;
  for (const auto& [text, data] : out.runs()) (data ? data_bytes : template_bytes) += text + "|";
  EXPECT_EQ(template_bytes,
            "<s><|start|>|\n|<b>|</b>|<|x|>|{\"role\": \"|\", \"content\": \"|\"}|");
  EXPECT_EQ(data_bytes, "user|<|a|>|<|| <|||> |user| <|a|> |");
  EXPECT_EQ(out.text(), "<s><|start|>user\n<|a|><b><|</b> <|<|x|>|> {\"role\": \"user\", \"content\": \" <|a|> \"}");
}

TEST(Jinja, UnsupportedConstructsNameTheFileLineAndConstruct) {
  struct Case {
    const char* source;
    const char* construct;
    const char* supported;
  };
  for (const Case& c : {
           Case{"a\n{% include 'x.jinja' %}", "t.jinja:2: unsupported Jinja construct '{% include %}'", "macro"},
           Case{"\n\n{{ [1, 2] | sum }}", "t.jinja:3: unsupported Jinja construct 'filter sum'", "tojson"},
           Case{"{% if x is sameas y %}{% endif %}", "t.jinja:1: unsupported Jinja construct 'test sameas'", "defined"},
           Case{"{% for x in y recursive %}{% endfor %}", "t.jinja:1: unsupported Jinja construct '{% for ... recursive %}'",
                "for/else"},
           Case{"{% call foo() %}{% endcall %}", "t.jinja:1: unsupported Jinja construct '{% call %}'", "set"},
           Case{"{% raw %}{{ x }}{% endraw %}", "t.jinja:1: unsupported Jinja construct '{% raw %}'", "generation"},
           Case{"\n{{ 'a'.isdigit() }}", "t.jinja:2: unsupported Jinja construct 'str.isdigit()'", "str.strip"},
           Case{"{{ cycler(1, 2) }}", "t.jinja:1: unsupported Jinja construct 'cycler()'", "namespace"},
           Case{"{{ 'é' | upper }}", "t.jinja:1: unsupported Jinja construct 'upper of non-ASCII text'", "ASCII"},
           Case{"{{ '%s' % 1 }}", "t.jinja:1: unsupported Jinja construct ''%' string formatting'", "'~'"},
       }) {
    std::string msg = stapo::test::error_message([&] { render(c.source); });
    EXPECT_EQ(msg.rfind(c.construct, 0), 0u) << msg;
    EXPECT_NE(msg.find("(supported"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.supported), std::string::npos) << msg;
  }
}

TEST(Jinja, SyntaxAndRuntimeErrorsNameTheLine) {
  struct Case {
    const char* source;
    const char* message;
  };
  for (const Case& c : {
           Case{"{% if true %}\nx", "t.jinja:2: missing '{% endif %}' before the end of the template"},
           Case{"a\n{{ 'open", "t.jinja:2: unterminated string literal"},
           Case{"{{ 1 +", "t.jinja:1: unclosed '{{' (missing '}}')"},
           Case{"{% endfor %}", "t.jinja:1: '{% endfor %}' without its opening statement"},
           Case{"{% break %}", "t.jinja:1: '{% break %}' outside a for loop"},
           Case{"\n\n{{ missing.attr }}", "t.jinja:3: 'missing' is undefined"},
           Case{"{{ 'a' + 1 }}", "t.jinja:1: unsupported operand type(s) for +: 'str' and 'int'"},
           Case{"{{ 1 // 0 }}", "t.jinja:1: division by zero"},
           Case{"\n{{ raise_exception('bad roles') }}", "t.jinja:2: the chat template raised an error: bad roles"},
           Case{"{{ range(10000000) | length }}", "t.jinja:1: range() of more than 1M items"},
           Case{"{% for i in range(300000) %}{% for j in range(4) %}{% endfor %}{% endfor %}",
                "t.jinja:1: the template ran more than 1M loop iterations"},
           Case{"{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                "t.jinja:1: '+' would build a string over 256 MiB"},
           Case{"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "t.jinja:1: macros nested more than 64 deep"},
           Case{"{% set x = 1 %}{% set x.a = 2 %}", "t.jinja:1: cannot assign attribute 'a' on 'x'"},
       }) {
    std::string msg = stapo::test::error_message([&] { render(c.source); });
    EXPECT_EQ(msg.rfind(c.message, 0), 0u) << msg;
  }
}

TEST(Jinja, StrftimeNowIsTodaysDate) {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char year[16];
  std::strftime(year, sizeof(year), "%Y", &local);
  EXPECT_EQ(render("{{ strftime_now('%Y') }}"), year);
}

TEST(Jinja, PythonStrip) {
  EXPECT_EQ(stapo::jinja::python_strip(" \t\n\x1c a b \xc2\xa0\xe3\x80\x80"), "a b");  // NBSP, ideographic space
  EXPECT_EQ(stapo::jinja::python_strip(""), "");
}

}  // namespace
