#!/usr/bin/env python3
"""Seed inputs for dev/fuzz/tokenizer_fuzz.cpp: the first byte picks the target (0 tokenizer.json, 1 SentencePiece
.model, 2 tiktoken, 3 a Jinja chat template, 4 text for the fixture tokenizers). Small tokenizers (vocabulary ~300) keep mutations fast.
   python3 dev/fuzz/make_seeds.py OUT_DIR"""
import base64
import io
import json
import os
import sys

import sentencepiece as spm
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
corpus = [json.loads(line) for line in open("tests/fixtures/tokenizer/corpus.jsonl", encoding="utf-8")]


def write(name, target, payload):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([target]) + payload)


for i, text in enumerate(corpus[:40]):
    write(f"text_{i}", 4, text.encode())

templates = [c["template"] for c in json.load(open("tests/fixtures/tokenizer/jinja_templates.json"))["constructs"]]
for name in ("bl_llama3", "sp_legacy", "sp_metaspace", "bl_gpt2"):
    templates.append(json.load(open(f"tests/fixtures/tokenizer/{name}/tokenizer_config.json"))["chat_template"])
for i, template in enumerate(templates):
    write(f"template_{i}", 3, template.encode())

for name, pre in [("bl", pre_tokenizers.ByteLevel(use_regex=True)),
                  ("split", pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{L}+|\s+|\p{N}"), "isolated"),
                                                     pre_tokenizers.ByteLevel(use_regex=False)])),
                  ("meta", pre_tokenizers.Metaspace())]:
    tok = Tokenizer(models.BPE(unk_token="<unk>" if name == "meta" else None, byte_fallback=name == "meta"))
    tok.pre_tokenizer = pre
    alphabet = pre_tokenizers.ByteLevel.alphabet() if name != "meta" else []
    tok.train_from_iterator(corpus[:300], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>"],
                                                              initial_alphabet=alphabet, show_progress=False))
    write(f"json_{name}", 0, tok.to_str().encode())

model = io.BytesIO()
spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, model_type="bpe", vocab_size=600,
                               byte_fallback=True, normalization_rule_name="identity", minloglevel=2, character_coverage=0.98,
                               remove_extra_whitespaces=False)
write("spm", 1, model.getvalue())

ranks = [bytes([b]) for b in range(256)] + [b"th", b"the", b" the", b"in", b"ing", b"  ", b"\n\n"]
write("tiktoken", 2, "".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)).encode())
