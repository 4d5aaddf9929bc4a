#!/usr/bin/env python3
"""Generates tests/fixtures/data/: a tiny Llama-3-style byte-level BPE tokenizer (trained here with HF
`tokenizers`), preference JSONL files in the three input layouts, and expected.json holding the token ids
prepare_data must write for each (file, template, truncation) case, for tests/data/test_prepare.cpp.
llama3 and chatml cases use the tokenizer trained here; llama2 and mistral cases the SentencePiece-style
tokenizers of tests/fixtures/tokenizer/ (their tokenizer_config.json holds the real templates).

The ids come from HF transformers, the way docs/data-format.md specifies them:
  prompt   = apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=True)
             with BOS prepended only when the template does not render it and the tokenizer adds BOS by
             default (exactly one BOS either way: the llama3 template renders it, chatml does not)
  response = tokenizer(content, add_special_tokens=False) + [the template's end-of-turn token]
then the truncation rule of data/truncate.h. As a check of that response rule, the script asserts that
apply_chat_template(prompt + [assistant reply]) starts with prompt + response for every pair.

Usage: python3 dev/reference/make_data_fixtures.py [--out tests/fixtures/data]
"""
import argparse
import json
import os
import random
import shutil

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|im_start|>", "<|im_end|>"]
# Llama 3's pre-tokenizer split.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Meta-Llama-3-8B-Instruct's chat template, verbatim.
LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                   "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
                   "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                   "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
                   "<|end_header_id|>\n\n' }}{% endif %}")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
TEMPLATES = {  # name: (jinja, renders BOS, end-of-turn token); llama2 and mistral come from the tokenizer fixtures
    "llama3": (LLAMA3_TEMPLATE, True, "<|eot_id|>"),
    "chatml": (CHATML_TEMPLATE, False, "<|im_end|>"),
}
# SentencePiece-style tokenizers with Llama 2's and Mistral's chat templates in their tokenizer_config.json, both
# adding BOS by default: snapshots of tests/fixtures/tokenizer/{sp_legacy,sp_metaspace} (made by
# dev/reference/make_tokenizer_fixtures.py), copied here so these ids stay valid when those are regenerated.
SP_TOKENIZERS = {"llama2": "data/sp_legacy", "mistral": "data/sp_metaspace"}

WORDS = ("the a of to and in is it you that was for on are with as his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each she which do their "
         "time if will way about many then them write would like so these her long make thing see him two has "
         "look more day could go come did number sound no most people my over know water than call first who may "
         "down side been now find answer question explain why because colour sky blue green river mountain "
         "café naïve résumé straße 日本語 中文 ещё 🙂 ✓ 42 3.14 1999 don't it's we're I'm").split()


def sentence(rng, lo, hi):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", ":\n- item\n- item", " (see below)."])


def train_tokenizer(rng, out_dir):
    corpus = [sentence(rng, 3, 25) for _ in range(3000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    tok_dir = os.path.join(out_dir, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    tok.save(os.path.join(tok_dir, "tokenizer.json"))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE,
              "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192}
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1, ensure_ascii=False)
    hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, "tokenizer.json"),
                                 bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert hf("hi").input_ids[0] == bos, "the tokenizer must add BOS by default (the double-BOS case)"
    return hf


def conversation(rng, turns, system):
    messages = [{"role": "system", "content": sentence(rng, 3, 8)}] if system else []
    for t in range(turns):
        messages.append({"role": "user", "content": sentence(rng, 2, 14)})
        if t + 1 < turns:
            messages.append({"role": "assistant", "content": sentence(rng, 2, 14)})
    return messages


def make_inputs(rng):
    plain, conversational, whole = [], [], []
    for i in range(10):
        prompt_words = 60 if i == 3 else (2, 12)  # pair 3: a long prompt, truncated by the short cases
        prompt = sentence(rng, prompt_words, prompt_words) if i == 3 else sentence(rng, *prompt_words)
        chosen = sentence(rng, 40, 40) if i == 5 else sentence(rng, 1, 12)  # pair 5: a long response
        rejected = sentence(rng, 1, 12)
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if i % 3 != 2:
            row = {"id": f"plain-{i}", **row}
        plain.append(row)
    for i in range(8):
        messages = conversation(rng, 1 + i % 3, system=(i % 2 == 0))
        conversational.append({"id": 1000 + i, "prompt": messages,
                               "chosen": [{"role": "assistant", "content": sentence(rng, 1, 20)}],
                               "rejected": [{"role": "assistant", "content": sentence(rng, 1, 20)}]})
    for i in range(8):
        messages = conversation(rng, 1 + i % 2, system=(i % 4 == 1))
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        whole.append({"prompt": user, "prompt_id": f"uf-{i:04x}",
                      "chosen": messages + [{"role": "assistant", "content": sentence(rng, 1, 20)}],
                      "rejected": messages + [{"role": "assistant", "content": sentence(rng, 1, 20)}],
                      "score_chosen": 8.0, "score_rejected": 4.5})
    return {"plain.jsonl": plain, "conversational.jsonl": conversational, "whole.jsonl": whole}


def record_of(row):
    """(id, prompt messages, chosen content, rejected content), as docs/data-format.md reads each layout."""
    rid = str(row.get("id", ""))
    if isinstance(row["chosen"], str):
        return rid, [{"role": "user", "content": row["prompt"]}], row["chosen"], row["rejected"]
    if isinstance(row.get("prompt"), list):
        return rid, row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"]
    shared = 0
    while row["chosen"][shared] == row["rejected"][shared]:
        shared += 1
    return rid, row["chosen"][:shared], row["chosen"][shared]["content"], row["rejected"][shared]["content"]


def tokenize(hf, template, messages, chosen, rejected):
    jinja, renders_bos, end_of_turn = TEMPLATES[template]
    prompt = list(hf.apply_chat_template(messages, chat_template=jinja, add_generation_prompt=True, tokenize=True,
                                         return_dict=False))
    if not renders_bos:
        prompt = [hf.bos_token_id] + prompt
    # One BOS first, never two; Llama 2's template repeats it before every later user turn, by design.
    assert prompt[0] == hf.bos_token_id and prompt[1] != hf.bos_token_id, "one BOS first"
    assert template == "llama2" or prompt.count(hf.bos_token_id) == 1, "exactly one BOS"
    eot = hf.convert_tokens_to_ids(end_of_turn)
    responses = []
    for content in (chosen, rejected):
        response = hf(content, add_special_tokens=False).input_ids + [eot]
        full = list(hf.apply_chat_template(messages + [{"role": "assistant", "content": content}],
                                           chat_template=jinja, tokenize=True, return_dict=False))
        if not renders_bos:
            full = [hf.bos_token_id] + full
        # Llama 2's template writes ' ' + reply + ' ' + eos: HF's ids carry one more '▁' before </s> than the
        # reply the model generates. Everywhere else the rendering is exactly prompt + response.
        if template == "llama2":
            assert full[:len(prompt) + len(response) - 1] == prompt + response[:-1], "llama2 reply != content ids"
        else:
            assert full[:len(prompt) + len(response)] == prompt + response, "response rule != the template's rendering"
        responses.append(response)
    return prompt, responses[0], responses[1]


def truncate(prompt, chosen, rejected, max_length, max_prompt_length, mode):
    """data/truncate.h: returns (prompt, chosen, rejected, truncated, skip_reason)."""
    truncated = False
    if len(prompt) + max(len(chosen), len(rejected)) > max_length:
        if len(prompt) > max_prompt_length:
            truncated = True
            if mode == "keep_start":
                prompt = prompt[:max_prompt_length]
            else:  # the BOS stays
                prompt = prompt[:1] + prompt[len(prompt) - (max_prompt_length - 1):]
        if len(prompt) + max(len(chosen), len(rejected)) > max_length:
            room = max_length - len(prompt)
            if room < 1:
                return None, None, None, False, "prompt leaves no room for a response"
            truncated = True
            chosen, rejected = chosen[:room], rejected[:room]
    return prompt, chosen, rejected, truncated, None


def make_case(tokenizers, name, inputs, template, max_length, max_prompt_length, mode):
    tokenizer = SP_TOKENIZERS.get(template, "data/tokenizer")
    hf = tokenizers[tokenizer]
    case = {"name": name, "input": name.split("-")[0] + ".jsonl", "tokenizer": tokenizer, "bos_id": hf.bos_token_id,
            "template": template, "max_length": max_length, "max_prompt_length": max_prompt_length,
            "truncation": mode, "pairs": [], "truncated": 0, "skipped": {}}
    rows = inputs[case["input"]]
    for row in rows:
        rid, messages, chosen, rejected = record_of(row)
        p, c, r = tokenize(hf, template, messages, chosen, rejected)
        p, c, r, truncated, skip = truncate(p, c, r, max_length, max_prompt_length, mode)
        if skip:
            case["skipped"][skip] = case["skipped"].get(skip, 0) + 1
            continue
        case["truncated"] += truncated
        case["pairs"].append({"id": rid, "prompt": p, "chosen": c, "rejected": r})
    case["read"], case["written"] = len(rows), len(case["pairs"])
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/data"))
    args = parser.parse_args()
    rng = random.Random(20261127)
    os.makedirs(args.out, exist_ok=True)
    tokenizers = {"data/tokenizer": train_tokenizer(rng, args.out)}
    fixtures = os.path.join(args.out, "..")
    for template, directory in SP_TOKENIZERS.items():
        path = os.path.join(fixtures, directory)
        source = os.path.join(fixtures, "tokenizer", os.path.basename(directory))
        if os.path.exists(source):
            shutil.copytree(source, path, dirs_exist_ok=True)
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            TEMPLATES[template] = (json.load(f)["chat_template"], True, "</s>")
        tokenizers[directory] = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                                                        bos_token="<s>", eos_token="</s>")
        assert tokenizers[directory]("hi").input_ids[0] == tokenizers[directory].bos_token_id
    inputs = make_inputs(rng)
    for file, rows in inputs.items():
        with open(os.path.join(args.out, file), "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    cases = []
    for file in ("plain", "conversational", "whole"):
        cases.append(make_case(tokenizers, f"{file}-llama3", inputs, "llama3", 1024, 512, "keep_end"))
    cases.append(make_case(tokenizers, "plain-chatml", inputs, "chatml", 1024, 512, "keep_end"))
    cases.append(make_case(tokenizers, "plain-llama3-keep_end", inputs, "llama3", 40, 24, "keep_end"))
    cases.append(make_case(tokenizers, "plain-llama3-keep_start", inputs, "llama3", 40, 24, "keep_start"))
    cases.append(make_case(tokenizers, "conversational-chatml-keep_end", inputs, "chatml", 64, 32, "keep_end"))
    for file in ("conversational", "whole"):
        for template in ("llama2", "mistral"):
            cases.append(make_case(tokenizers, f"{file}-{template}", inputs, template, 1024, 512, "keep_end"))
    cases.append(make_case(tokenizers, "plain-mistral-keep_end", inputs, "mistral", 48, 24, "keep_end"))
    # No room: max_prompt_length = max_length = the longest prompt, which then leaves no room for a response,
    # while a prompt one token shorter keeps exactly one token of each response.
    prompts = sorted(len(p["prompt"]) for p in cases[0]["pairs"])
    longest = prompts[-1]
    cases.append(make_case(tokenizers, "plain-llama3-noroom", inputs, "llama3", longest, longest, "keep_start"))
    cases.append(make_case(tokenizers, "plain-llama3-oneroom", inputs, "llama3", longest + 1, longest + 1, "keep_start"))
    assert cases[-2]["skipped"] and all(len(p["chosen"]) == 1 for p in cases[-1]["pairs"] if len(p["prompt"]) == longest)

    expected = {"generated_by": "dev/reference/make_data_fixtures.py", "cases": cases}
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)
    for c in cases:
        print(f"{c['name']:34s} read {c['read']:2d} written {c['written']:2d} truncated {c['truncated']} "
              f"skipped {c['skipped']}")


if __name__ == "__main__":
    main()
