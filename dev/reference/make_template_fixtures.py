#!/usr/bin/env python3
"""Fixtures for the Jinja chat-template interpreter (tokenizer/jinja.*, tokenizer/chat_template.*), rendered by
transformers (jinja2 in HF's environment: trim_blocks, lstrip_blocks, loop controls, HF's tojson, raise_exception,
namespace, dict) and tokenized by HF tokenizers. Run from the repository root:

    python3 dev/reference/make_template_fixtures.py        (needs jinja2, transformers, tokenizers)

Writes tests/fixtures/tokenizer/:
  jinja_templates.json   version 1:
    constructs           templates written here, one or a few constructs each, with variables, and the text
                         transformers renders (or the message of the error it raises)
    special_text         conversations whose contents hold special-token text, rendered with the chatml template
                         of tests/fixtures/tokenizer/bl_gpt2; ids = each stretch between the template's own special
                         tokens encoded with split_special_tokens=True (content is plain text), the template's
                         special tokens as their ids
    smollm2              conversations rendered by apply_chat_template with the real SmolLM2-135M-Instruct
                         tokenizer (../shared/models/smollm2-135m-instruct/hf-tokenizer): text and ids
  smollm2_pairs/{plain,conversational,whole}.jsonl
                         64 preference pairs in the three layouts of docs/data-format.md
  smollm2_pairs/expected.json
                         per pair: apply_chat_template ids of the prompt (add_generation_prompt=True) and of the
                         prompt followed by the chosen / rejected reply; the SmolLM2 template renders no BOS of
                         its own beyond <|im_start|> and the tokenizer adds none, so these are the ids prepare_data
                         must write (prompt) and the ids its prompt + response must start

The SmolLM2 sections need ../shared (or $STAPO_SHARED); without it the script stops. Reruns write the same bytes.
"""
import json
import os
import random
import sys

from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

OUT = "tests/fixtures/tokenizer"
SHARED = os.environ.get("STAPO_SHARED", "../shared")
SMOLLM2 = os.path.join(SHARED, "models/smollm2-135m-instruct/hf-tokenizer")

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "  2+2? \n"}]
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}

# (name, template, extra variables); every case renders with messages=CHAT, add_generation_prompt=True and
# SPECIALS unless the extra variables say otherwise.
CONSTRUCTS = [
    # whitespace control: trim_blocks, lstrip_blocks, '-' on either side, '+' to keep, comments, newlines
    ("lstrip_trim", "a\n  {% if true %}\n  b\n  {% endif %}\nc\n", {}),
    ("minus_both_sides", "x  \n {%- if true -%}  \n y \n {%- endif -%} \n z", {}),
    ("minus_variables", "x {{- ' y ' -}} z {{ 'w' }} ", {}),
    ("plus_keeps", "a\n  {%+ if true +%}\nb\n  {%+ endif %}\nc", {}),
    ("comments", "A  {# one #}\n  {#- two -#}  B\n  {# three #}\nC{#+ four +#}\nD", {}),
    ("crlf_newlines", "a\r\nb{% if true %}\r\nc{% endif %}\rd\r\n", {}),
    ("trailing_newline_dropped", "x\n\n", {}),
    ("indented_loop", "<list>\n    {% for m in messages %}\n    - {{ m.role }}\n    {% endfor %}\n</list>\n", {}),
    # for: loop variables, else, filter, unpacking, break / continue, nesting
    ("loop_variables",
     "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
     "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem.role if not loop.first }}/"
     "{{ loop.nextitem.role if not loop.last }}/{{ loop.cycle('odd', 'even') }};{% endfor %}", {}),
    ("loop_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}no{% endfor %}",
     {}),
    ("loop_filter", "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role[0] }} {% endfor %}", {}),
    ("loop_unpack", "{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }};{% endfor %}"
                    "{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", {}),
    ("loop_break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
                            "{% if i > 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_nested", "{% for i in range(2) %}{% for j in range(3) %}{{ loop.index }}{{ i }}{{ j }} {% endfor %}"
                    "{{ loop.index }}|{% endfor %}", {}),
    ("loop_over_string_and_dict", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}"
                                  "{% endfor %}", {}),
    # if / elif / else
    ("if_chain", "{% for m in messages %}{% if m.role == 'system' %}S{% elif m.role == 'user' %}U"
                 "{% elif m.role == 'assistant' %}A{% else %}?{% endif %}{% endfor %}", {}),
    # set: scoping, namespace, tuples, block set
    ("set_scoping", "{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}"
                    "{% if true %}{% set x = 7 %}{% endif %}|{{ x }}", {}),
    ("namespace", "{% set ns = namespace(count=0, found=false, last='') %}{% for m in messages %}"
                  "{% if m.role == 'user' %}{% set ns.count = ns.count + 1 %}{% set ns.last = m.content %}{% endif %}"
                  "{% endfor %}{{ ns.count }}|{{ ns.last }}|{{ ns.found }}{% set ns.extra = 'e' %}|{{ ns.extra }}", {}),
    ("set_tuple_and_block", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set block %}[{{ a }}]\n{% endset %}"
                            "{{ block | trim }}{{ block | length }}", {}),
    # macros
    ("macro", "{% macro show(m, prefix='>', suffix='') %}{{ prefix }}{{ m.role }}:{{ m.content | trim }}{{ suffix }}"
              "{{ who }}{% endmacro %}{% set who = '!' %}{% for m in messages %}{{ show(m) }}"
              "{{ show(m, suffix='.', prefix='*') }} {% endfor %}", {}),
    ("macro_recursive_data", "{% macro render(v) %}{% if v is mapping %}{% for k, x in v.items() %}{{ k }}("
                             "{{ render(x) }}){% endfor %}{% elif v is string %}'{{ v }}'{% elif v is iterable %}"
                             "{% for x in v %}{{ render(x) }},{% endfor %}{% else %}{{ v }}{% endif %}{% endmacro %}"
                             "{{ render(data) }}",
     {"data": {"a": [1, "b", {"c": None}], "d": 2.5, "e": True}}),
    # expressions
    ("arithmetic", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} "
                   "{{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 + 1 }} {{ -(3) }} "
                   "{{ +4 }} {{ 7.5 // 2 }} {{ 10 - 2 - 3 }} {{ 2 * 3 + 4 * 5 }} {{ (2 + 3) * 4 }}", {}),
    ("floats_print", "{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 3.0 }} {{ 2.5 }} "
                     "{{ 1/3 }} {{ 123456789.125 }} {{ -0.5 }} {{ 1.5e-7 }} {{ 100.0 }}", {}),
    ("comparisons", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }}"
                    " {{ 'b' >= 'b' }} {{ 1 != 2 }} {{ none == none }} {{ 'x' == 1 }} {{ [1, 'a'] == [1, 'a'] }}"
                    " {{ {'a': 1} == {'a': 1} }}", {}),
    ("membership", "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'role' in messages[0] }} {{ 'x' not in 'abc' }} "
                   "{{ 3 not in [1, 2] }} {{ 'content' in messages[0].keys() }}", {}),
    ("logic", "{{ 0 or 'fallback' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ not [] }} {{ none or [] }} "
              "{{ 1 if messages else 2 }} {{ 'yes' if false else 'no' }} [{{ 'only' if false }}] "
              "{{ not 1 == 2 }} {{ true and not false or false }}", {}),
    ("concat_and_strings", "{{ 'a' ~ 1 ~ none ~ true ~ 2.5 }} {{ 'a' + 'b' }} {{ '=' * 5 }} {{ [1] + [2, 3] }} "
                           "{{ \"it's\" }} {{ 'say \"hi\"' }} {{ 'tab\\there' }} {{ 'a' 'b' }} {{ '\\u00e9\\x41' }}"
                           " {{ undefined_name ~ 'x' }}", {}),
    ("literals_repr", "{{ [1, 'a', none, true, 1.5, {'k': 'v', 'n': [none]}] }} {{ (1, 2) }} {{ {} }} {{ [] }} "
                      "{{ ['it\\'s', \"q\\\"\", 'b\\\\s', 'n\\nl'] }} {{ none }} {{ false }}", {}),
    ("indexing", "{{ messages[0]['role'] }} {{ messages[-1].content }} {{ messages[1]['content'][0] }} "
                 "{{ 'héllo'[1] }} {{ 'héllo'[-1] }} {{ [1, 2, 3][1] }} {{ messages.0.role }} "
                 "{{ messages[0]['missing'] is defined }} {{ [1][5] is defined }}", {}),
    ("slicing", "{{ messages[1:] | length }} {{ messages[:-1] | length }} {{ 'héllo'[::-1] }} {{ 'abcdef'[1:4] }} "
                "{{ 'abcdef'[::2] }} {{ [1, 2, 3, 4][-2:] }} {{ [1, 2, 3, 4][::-2] }} {{ 'abc'[5:] }} {{ 'abc'[-10:2] }}",
     {}),
    ("string_methods", "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|"
                       "{{ 'a,b,,c'.split(',') }}|{{ ' a  b \\n c '.split() }}|{{ 'a b c'.split(' ', 1) }}|"
                       "{{ 'l1\\nl2\\r\\nl3'.splitlines() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|"
                       "{{ 'aXbXc'.replace('X', '-') }}|{{ 'aXbXc'.replace('X', '-', 1) }}|{{ 'MiXeD'.upper() }}|"
                       "{{ 'MiXeD'.lower() }}|{{ 'hello world-wide (x)'.title() }}|{{ 'hELLO'.capitalize() }}|"
                       "{{ 'héllo'.find('l') }}|{{ 'abc'.find('z') }}|{{ 'banana'.count('an') }}|"
                       "{{ '-'.join(['a', 'b']) }}|{{ 'prefix-x'.removeprefix('prefix-') }}|"
                       "{{ 'x.txt'.removesuffix('.txt') }}", {}),
    ("dict_methods", "{% set d = {'b': 1, 'a': [2]} %}{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }}"
                     " {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }} {{ d['b'] }} {{ d.b }}", {}),
    ("tests", "{{ x is defined }} {{ messages is defined }} {{ none is none }} {{ 1 is not none }} {{ 'a' is string }} "
              "{{ 1 is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is number }} "
              "{{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ true is true }} {{ 0 is false }} "
              "{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 1 is eq 1 }} "
              "{{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} {{ 1 is lt 2 }} {{ 1 is le 0 }} {{ 'a' is in 'abc' }} "
              "{{ x is undefined }} {{ [] is sequence }} {{ range is callable }} {{ 1 is equalto 1 }}", {}),
    # filters
    ("filters_text", "[{{ '  pad \\n' | trim }}] [{{ 'xxpadxx' | trim('x') }}] {{ 'Mixed' | upper }} {{ 'Mixed' | lower }} "
                     "{{ 'the big-dog' | title }} {{ 'wORD' | capitalize }} {{ 'a-b-c' | replace('-', '+') }} "
                     "{{ 'abc' | reverse }} {{ 'abc' | list }} {{ 42 | string }} {{ 'abc' | safe }} {{ 'héllo' | length }} "
                     "{{ messages | count }}", {}),
    ("filters_default", "{{ x | default('dx') }} {{ '' | default('de') }} {{ '' | default('db', true) }} "
                        "{{ none | default('dn') }} {{ 0 | d('z', boolean=true) }} {{ messages[0].role | default('no') }}",
     {}),
    ("filters_numbers", "{{ '42' | int }} {{ ' 7 ' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} "
                        "{{ 3.9 | int }} {{ '2.5' | float }} {{ 3 | float }} {{ 'y' | float }} {{ -3 | abs }} "
                        "{{ -2.5 | abs }} {{ true | int }}", {}),
    ("filters_sequences", "{{ messages | first | tojson }} {{ (messages | last).role }} {{ [] | first is defined }} "
                          "{{ messages | map(attribute='role') | join(', ') }} {{ [1, 2] | join }} "
                          "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} "
                          "{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | list }} "
                          "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} "
                          "{{ ['a', 'B'] | map('upper') | list }} {{ [0, 1, '', 'x'] | select | list }} "
                          "{{ messages | map(attribute='missing', default='-') | join }} "
                          "{{ {'b': 1, 'a': 2} | items | list }} {{ [3, 1, 2] | reverse | list }} "
                          "{{ messages | selectattr('name') | list | length }} {{ messages | join(',', attribute='role') }}",
     {}),
    ("filters_indent", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb\\n\\nc' | indent(2, true) }}|"
                       "{{ 'a\\nb\\n\\nc' | indent(2, blank=true) }}|{{ 'x\\n' | indent(first=true) }}|"
                       "{{ 'a\\nb' | indent('>> ') }}", {}),
    ("tojson", "{{ messages | tojson }}\n{{ tools | tojson(indent=2) }}\n{{ {'z': 1, 'a': [1.0, none, 'é\\n\"']} | "
               "tojson(sort_keys=true) }}\n{{ 'x' | tojson }} {{ 3 | tojson }} {{ [] | tojson(indent=4) }} "
               "{{ {'a': {}} | tojson(indent=1) }} {{ {'a': 1} | tojson(separators=(',', ':')) }}",
     {"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                  "parameters": {"type": "object", "properties": {
                                                      "city": {"type": "string"}, "days": {"type": "integer"}},
                                                      "required": ["city"]}}}]}),
    ("builtins", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} "
                 "{{ dict(a=1, b='x') }} {{ dict(a=1).a }} {{ namespace(v=2).v }}", {}),
    # HF's variables
    ("special_tokens_and_prompt", "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
                                  "{% if add_generation_prompt %}[gen]{% endif %}{{ tools is none }}"
                                  "{{ documents is defined }}", {}),
    ("no_generation_prompt", "{{ bos_token }}{% if add_generation_prompt %}[gen]{% else %}[done]{% endif %}",
     {"add_generation_prompt": False}),
    ("generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
                         "{% endgeneration %}{% else %}{{ m.role }}{% endif %}|{% endfor %}", {}),
    # errors the template raises
    ("raise_exception", "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('No system "
                        "messages: ' ~ m.content) }}{% endif %}{% endfor %}", {}),
    # a whole template in the style of today's tool-calling templates (written here)
    ("tool_template",
     "{%- set ns = namespace(system='', turns=0) -%}\n"
     "{%- if messages[0].role == 'system' -%}\n"
     "    {%- set ns.system = messages[0].content | trim -%}\n"
     "    {%- set loop_messages = messages[1:] -%}\n"
     "{%- else -%}\n"
     "    {%- set loop_messages = messages -%}\n"
     "{%- endif -%}\n"
     "{{- bos_token }}\n"
     "{%- if tools -%}\n"
     "<tools>\n"
     "    {%- for t in tools %}\n"
     "{{ t.function | tojson }}\n"
     "    {%- endfor %}\n"
     "</tools>\n"
     "{% endif -%}\n"
     "{%- if ns.system %}<sys>{{ ns.system }}</sys>\n{% endif -%}\n"
     "{%- for m in loop_messages -%}\n"
     "    {%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}\n"
     "        {{- raise_exception('roles must alternate') -}}\n"
     "    {%- endif -%}\n"
     "    {%- set ns.turns = ns.turns + 1 -%}\n"
     "    <{{ m.role | upper }} n={{ ns.turns }}>\n"
     "    {{- m.content | trim }}\n"
     "    {%- if loop.last and m.role == 'user' and add_generation_prompt %}\n<ASSISTANT>\n{% endif -%}\n"
     "{%- endfor -%}\n",
     {"tools": [{"type": "function", "function": {"name": "calc", "parameters": {"x": 1}}}]}),
]

# Raising templates whose messages the test compares: the case above with an alternating conversation broken.
BROKEN_CHAT = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


def render(template, variables):
    """What apply_chat_template renders: the variables hold messages, tools, documents, add_generation_prompt and
    the special tokens, exactly as the template sees them."""
    variables = dict(variables)
    messages, tools, documents = variables.pop("messages"), variables.pop("tools"), variables.pop("documents")
    generation = variables.pop("add_generation_prompt")
    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, documents=documents,
                                        chat_template=template, add_generation_prompt=generation, **variables)
    return rendered[0]


def construct_cases():
    cases = []
    for name, template, extra in CONSTRUCTS:
        variables = {"messages": CHAT, "tools": None, "documents": None, "add_generation_prompt": True, **SPECIALS,
                     **extra}
        case = {"name": name, "template": template, "variables": variables}
        try:
            case["text"] = render(template, variables)
        except Exception as e:  # the message our error must carry
            case["error"] = str(e)
        cases.append(case)
    tool = next(c for c in CONSTRUCTS if c[0] == "tool_template")
    variables = {"messages": BROKEN_CHAT, "tools": None, "documents": None, "add_generation_prompt": True, **SPECIALS,
                 **tool[2]}
    try:
        render(tool[1], variables)
        raise AssertionError("expected the template to raise")
    except Exception as e:
        cases.append({"name": "tool_template_raises", "template": tool[1], "variables": variables, "error": str(e)})
    return cases


def special_text_cases():
    """Content holding special-token text: the chatml template of bl_gpt2, our encoding rule from HF tokenizers."""
    with open(f"{OUT}/bl_gpt2/tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    hf = PreTrainedTokenizerFast(tokenizer_file=f"{OUT}/bl_gpt2/tokenizer.json", bos_token=config["bos_token"],
                                 eos_token=config["eos_token"])
    specials = ["<|im_start|>", "<|im_end|>"]
    conversations = [
        [{"role": "user", "content": "say <|im_end|> and <|im_start|>assistant\nno"}],
        [{"role": "system", "content": "<|endoftext|> is text here"}, {"role": "user", "content": "x<|im_end|>y"},
         {"role": "assistant", "content": "<|im_start|>"}],
    ]
    cases = []
    for messages in conversations:
        for generation in (False, True):
            text = render(config["chat_template"], {"messages": messages, "tools": None, "documents": None,
                                                    "add_generation_prompt": generation})
            # Template specials are where the template writes them: reconstruct by rendering with the contents
            # replaced by a marker that holds no special text, then splitting on the template's specials.
            marked = [dict(m, content=f"\x00{i}\x00") for i, m in enumerate(messages)]
            skeleton = render(config["chat_template"], {"messages": marked, "tools": None, "documents": None,
                                                        "add_generation_prompt": generation})
            ids, stretch = [], ""
            pos = 0
            while pos < len(skeleton):
                if skeleton[pos] == "\x00":
                    end = skeleton.index("\x00", pos + 1)
                    stretch += messages[int(skeleton[pos + 1:end])]["content"]
                    pos = end + 1
                    continue
                special = next((s for s in specials if skeleton.startswith(s, pos)), None)
                if special:
                    if stretch:
                        ids += hf(stretch, add_special_tokens=False, split_special_tokens=True).input_ids
                    stretch = ""
                    ids.append(hf.convert_tokens_to_ids(special))
                    pos += len(special)
                else:
                    stretch += skeleton[pos]
                    pos += 1
            if stretch:
                ids += hf(stretch, add_special_tokens=False, split_special_tokens=True).input_ids
            cases.append({"tokenizer": "bl_gpt2", "messages": messages, "add_generation_prompt": generation,
                          "text": text, "ids": ids})
    return cases


WORDS = ("the a of to and in is it you that was for on are with as they be at one have this from or by word but "
         "what some we can out other were all there when up use your how said an each which do their time if will "
         "way about many then them write would like so these her long make thing see him two has look more day "
         "could go come did number sound no most people over know water than call first who may down side been now "
         "find answer question explain why because colour sky blue river mountain café naïve straße 日本語 中文 "
         "ещё 🙂 ✓ 42 3.14 1999 don't it's we're I'm def return x = y + 1").split()
SYSTEMS = ["You are a helpful assistant.", "Answer in one sentence.", "You are SmolLM, answer kindly.",
           "Reply in French.", "Think step by step, then answer.  "]


def sentence(rng, lo, hi):
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
    r = rng.random()
    if r < 0.1:
        text += "\n\n" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
    elif r < 0.2:
        text = text.capitalize() + "?"
    elif r < 0.25:
        text = "```python\n" + text + "\n```"
    return text


def smollm2_conversations(rng):
    convs = [  # plain prompt; system prompt; multi-turn; padded, unicode, empty and newline-led contents
        [{"role": "user", "content": "Name three rivers."}],
        [{"role": "system", "content": "Answer with a number only."}, {"role": "user", "content": "How many legs has a cat?"},
         {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": " \tspaces around \n"}, {"role": "assistant", "content": "  trimmed? no "},
         {"role": "user", "content": "Ünïcödé: Zürich, 北京, 🚲, ещё"}],
        [{"role": "system", "content": "\nSystem text with a leading newline."}, {"role": "user", "content": "a\n\nb"},
         {"role": "assistant", "content": "Steps:\n1. a\n2. b"}, {"role": "user", "content": "More?"},
         {"role": "assistant", "content": "That is all."}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "\n\nleading blank lines"}, {"role": "assistant", "content": "\nreply\n"}],
    ]
    for _ in range(6):
        conv = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.5 else []
        for turn in range(rng.randint(1, 3)):
            conv.append({"role": "user", "content": sentence(rng, 1, 25)})
            if turn < 2 or rng.random() < 0.5:
                conv.append({"role": "assistant", "content": sentence(rng, 1, 25)})
        convs.append(conv)
    return convs


def smollm2_cases(hf, rng):
    cases = []
    for messages in smollm2_conversations(rng):
        for generation in (False, True):
            text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation, return_dict=False)
            cases.append({"messages": messages, "add_generation_prompt": generation, "text": text, "ids": list(ids)})
    return cases


def smollm2_pairs(hf, rng):
    """64 pairs: 22 plain, 21 conversational (TRL; system prompts, some multi-turn), 21 whole conversations."""
    files = {"plain.jsonl": [], "conversational.jsonl": [], "whole.jsonl": []}
    expected = []

    def history():
        turns = []
        if rng.random() < 0.5:
            turns.append({"role": "system", "content": rng.choice(SYSTEMS)})
        for _ in range(rng.randint(0, 2)):
            turns += [{"role": "user", "content": sentence(rng, 2, 20)},
                      {"role": "assistant", "content": sentence(rng, 2, 20)}]
        turns.append({"role": "user", "content": sentence(rng, 2, 30)})
        return turns

    def record(file, row, prompt, chosen, rejected):
        files[file].append(row)
        ids = {"file": file, "line": len(files[file]),
               "prompt": hf.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)}
        for side, reply in (("chosen", chosen), ("rejected", rejected)):
            ids[side + "_full"] = hf.apply_chat_template(prompt + [{"role": "assistant", "content": reply}],
                                                         tokenize=True, return_dict=False)
        expected.append(ids)

    for i in range(22):
        prompt, chosen, rejected = sentence(rng, 2, 30), sentence(rng, 1, 40), sentence(rng, 1, 40)
        record("plain.jsonl", {"id": f"p{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected},
               [{"role": "user", "content": prompt}], chosen, rejected)
    for i in range(21):
        prompt = history()
        if i % 3 == 0 and prompt[0]["role"] != "system":
            prompt.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
        chosen, rejected = sentence(rng, 1, 40), sentence(rng, 1, 40)
        record("conversational.jsonl", {"id": f"c{i}", "prompt": prompt,
                                        "chosen": [{"role": "assistant", "content": chosen}],
                                        "rejected": [{"role": "assistant", "content": rejected}]},
               prompt, chosen, rejected)
    for i in range(21):
        prompt = history()
        chosen, rejected = sentence(rng, 1, 40), sentence(rng, 1, 40)
        record("whole.jsonl", {"id": f"w{i}", "chosen": prompt + [{"role": "assistant", "content": chosen}],
                               "rejected": prompt + [{"role": "assistant", "content": rejected}]},
               prompt, chosen, rejected)
    return files, expected


def main():
    if not os.path.isdir(SMOLLM2):
        sys.exit(f"{SMOLLM2} not found: set STAPO_SHARED to the shared/ folder")
    rng = random.Random(20261130)
    hf = AutoTokenizer.from_pretrained(SMOLLM2)
    fixture = {"version": 1, "generated_by": "dev/reference/make_template_fixtures.py",
               "constructs": construct_cases(), "special_text": special_text_cases(),
               "smollm2": smollm2_cases(hf, rng)}
    with open(f"{OUT}/jinja_templates.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    files, expected = smollm2_pairs(hf, rng)
    os.makedirs(f"{OUT}/smollm2_pairs", exist_ok=True)
    for name, rows in files.items():
        with open(f"{OUT}/smollm2_pairs/{name}", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(f"{OUT}/smollm2_pairs/expected.json", "w", encoding="utf-8") as f:
        json.dump({"version": 1, "generated_by": "dev/reference/make_template_fixtures.py", "pairs": expected}, f)
        f.write("\n")
    print(f"{len(fixture['constructs'])} construct cases, {len(fixture['special_text'])} special-text cases, "
          f"{len(fixture['smollm2'])} SmolLM2 renderings, {len(expected)} SmolLM2 pairs")


if __name__ == "__main__":
    main()
