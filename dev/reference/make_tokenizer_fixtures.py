#!/usr/bin/env python3
"""Tokenizer fixtures for tests/tokenizer/, from the reference libraries (tokenizers, sentencepiece, tiktoken,
transformers). Run from the repository root:  python3 dev/reference/make_tokenizer_fixtures.py

Writes tests/fixtures/tokenizer/:
  corpus.jsonl              2,400 test strings (one JSON string per line; seeded, so reruns are identical):
                            English, code, digits, whitespace runs, accents, CJK, emoji, mixed scripts,
                            Unicode spaces, contractions, special-token text inside user text
  <name>/                   a tokenizer we train here (ours, committed) and its tokenizer_config.json
  <name>.ids.jsonl          per corpus line: {"ids": [...]} encoded by the reference library, plus
                            "special": [...] when encoding with special tokens recognised differs
  <name>.decode.jsonl       random id sequences and the reference library's decoding (U+FFFD placement)
  llama2_real.ids.jsonl     the real Llama 2 tokenizer.model (../shared, never committed) run by sentencepiece
  variants.json             pre-tokenizer/normalizer variants swapped into the files above, with tokenizers' ids
  chat_templates.json       conversations rendered by transformers' apply_chat_template with the Jinja
                            templates below (text, and ids where the tokenizer has the template's tokens)

Tokenizers trained (small vocabularies keep the files small):
  bl_llama3     byte-level BPE, Llama 3's Split regex + ByteLevel, ignore_merges (tokenizers)
  bl_gpt2       byte-level BPE, GPT-2's ByteLevel(use_regex) pre-tokenizer, a non-special added token (tokenizers)
  sp_legacy     SentencePiece-style tokenizer.json as Llama 2 ships it: Prepend+Replace normalizer,
                byte_fallback, fuse_unk, <0xXX> byte tokens, Strip decoder (tokenizers)
  sp_metaspace  the same vocabulary with the Metaspace(prepend_scheme=first, split=false) pre-tokenizer
  sp_model      SentencePiece BPE .model with byte fallback, identity normalizer, user-defined symbol (sentencepiece)
  sp_model_clean  .model with remove_extra_whitespaces=true, no byte fallback (unk runs) (sentencepiece)
  tiktoken      bl_llama3's vocabulary as a tiktoken file (rank = id among non-special tokens), Llama 3's
                pattern and 256 special tokens (tiktoken)
"""
import base64
import io
import json
import os
import random
import sys

import sentencepiece as spm
import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = "tests/fixtures/tokenizer"
SHARED = os.environ.get("STAPO_SHARED", "../shared")
SEED = 20240611
N_TEST = 2400

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(LLAMA3_SPECIALS))]

# ---------------------------------------------------------------- corpus
WORDS = ("the of and to in is was for on that with as by at from it be this are have an or not which but "
         "model token data train loss gradient preference policy reference reward chosen rejected answer question "
         "quick brown fox jumps over lazy dog hello world people time year way day thing man woman life child "
         "Python Rust Llama Mistral GPU CUDA tensor matrix vector batch").split()
ACCENTED = ("café naïve résumé façade déjà vu Müller Straße über größer español niño año corazón "
            "São Paulo ação Kraków łódź Ελλάδα Tiếng Việt Nguyễn Đà Nẵng Ærøskøbing fjörður Ħal Saflieni").split()
CJK = ["你好，世界", "我们今天去公园散步。", "机器学习模型", "東京都渋谷区", "こんにちは、元気ですか？", "カタカナとひらがな",
       "안녕하세요 세계", "한국어 문장입니다.", "漢字仮名交じり文", "中文、日本語、한국어", "〈括弧〉「引用」『二重』"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🔥", "🤖", "🧪", "✨", "🏳️‍🌈", "🙂🙃", "⌚", "☕", "🎉🎉🎉"]
SCRIPTS = ["Привет, мир!", "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
           "ქართული ენა", "Հայերեն", "ትግርኛ", "ᚠᚢᚦᚨᚱᚲ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "Ⅻ ⅷ ½ ¾ ² ³ ٣ ४ ໓"]
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "if x != None and y >= 3:\n        print(f\"{x!r} -> {y:.3f}\")", "#include <stdio.h>\nint main(void) { return 0; }",
        "SELECT id, name FROM users WHERE age > 21 ORDER BY name;", "const add = (a, b) => a + b; // arrow",
        "x = [i**2 for i in range(10) if i % 2 == 0]", "fn main() { let v: Vec<u8> = vec![1, 2, 3]; }",
        "<div class=\"row\">&nbsp;</div>", "{\"key\": [1, 2.5e-3, null, true], \"k2\": \"v\"}",
        "$ ls -la ~/.config | grep -v '^d' >> out.txt 2>&1", "a_b__c___d ++-- ==!= <<= >>= ::", "\\n\\t\\r \\\\ \\u00e9"]
CONTRACTIONS = ["don't", "I'm", "they'll", "we've", "she's", "it'd", "you're", "DON'T", "I'M", "THEY'LL", "We'Ve",
                "rock'n'roll", "'s 't 're", "o'clock"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t", "\u00a0", "\u3000", "\u2009", "\u0085",
          "\u2028", "\u200b", "\u202f", "    \n", "\n   \n"]
SPECIAL_TEXT = ["<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<s>", "</s>", "<unk>",
                "<|im_start|>", "<|im_end|>", "<tool>", "<0x41>", "<|reserved_special_token_7|>", "[INST]", "<<SYS>>"]


def number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 12)))
    if kind == 1:
        return f"{rng.uniform(-1e4, 1e4):.{rng.randrange(1, 6)}f}"
    if kind == 2:
        return f"+1 ({rng.randrange(100, 999)}) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if kind == 3:
        return f"{rng.randrange(1, 31)}/{rng.randrange(1, 12)}/{rng.randrange(1900, 2100)}"
    if kind == 4:
        return f"{rng.uniform(0, 1):.3e}"
    return "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 30)))


def sentence(rng):
    words = [rng.choice(WORDS) for _ in range(rng.randrange(1, 14))]
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] = rng.choice(WORDS).upper()
    return " ".join(words) + rng.choice([".", "!", "?", ",", ";", ":", "", "...", " -", "\u2014", "\u2026"])


def fragment(rng):
    kind = rng.randrange(11)
    if kind <= 2:
        return sentence(rng)
    if kind == 3:
        return rng.choice(CODE)
    if kind == 4:
        return number(rng)
    if kind == 5:
        return " ".join(rng.choice(ACCENTED) for _ in range(rng.randrange(1, 6)))
    if kind == 6:
        return rng.choice(CJK)
    if kind == 7:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 4)))
    if kind == 8:
        return rng.choice(SCRIPTS)
    if kind == 9:
        return " ".join(rng.choice(CONTRACTIONS) for _ in range(rng.randrange(1, 4)))
    return rng.choice(SPECIAL_TEXT)


def make_string(rng):
    parts = []
    for _ in range(rng.randrange(1, 6)):
        parts.append(fragment(rng))
        parts.append(rng.choice(SPACES) if rng.random() < 0.35 else " ")
    text = "".join(parts)
    if rng.random() < 0.5:
        text = text.rstrip(" ")
    if rng.random() < 0.15:
        text = rng.choice(SPACES) + text
    return text


def make_corpus(seed, n):
    rng = random.Random(seed)
    fixed = ["", " ", "a", "  leading spaces", "trailing spaces   ", "\n", "\t\tindented", "x" * 300,
             "1234567890" * 5, "!!!???...", "\u00a0\u00a0nbsp", "ÀÉÎÕÜ àéîõü", "\U0001F600" * 5,
             "<|endoftext|><|endoftext|>", "<s>[INST] hi [/INST]</s>", "<|eot_id|>\n\n<|start_header_id|>user",
             "a\u0085b", "a\u2028b\u2029c", "don't DON'T Don'T"]
    corpus = fixed + [make_string(rng) for _ in range(n - len(fixed))]
    assert len(set(corpus)) > 0.9 * n
    return corpus


# ---------------------------------------------------------------- tokenizers
def train_byte_level(train_texts, split_llama3, specials, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=split_llama3))
    if split_llama3:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern=Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(train_texts, trainer)
    return tok


def train_sp_style(train_texts, vocab_size):
    """A SentencePiece-style BPE (▁ words, byte fallback), reshaped as Llama 2's tokenizer.json lays it out:
    <unk> <s> </s> then <0x00>..<0xFF> as ordinary vocabulary, then the learned pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False, min_frequency=2)
    # Characters from U+3000 up (CJK, emoji, ...) are left out of training so that they need byte fallback
    # (limit_alphabet would do it too, but breaks frequency ties at random). Text spelling a byte token
    # ("<0x41>") would teach merges that build it, a collision Llama 2 never has.
    texts = ["".join(c for c in t if ord(c) < 0x3000).replace("<0x", "<0 x") for t in train_texts]
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [dict(id=vocab[t], content=t, single_word=False, lstrip=False, rstrip=False,
                                 normalized=False, special=True) for t in ["<unk>", "<s>", "</s>"]]
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    legacy = dict(spec)
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                                {"type": "Replace", "pattern": {"String": " "},
                                                                 "content": "▁"}]}
    legacy["pre_tokenizer"] = None
    legacy["decoder"] = legacy_decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    metaspace = dict(spec)
    metaspace["normalizer"] = None
    metaspace["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    metaspace["decoder"] = legacy_decoder
    return Tokenizer.from_str(json.dumps(legacy)), Tokenizer.from_str(json.dumps(metaspace))


def train_sentencepiece(train_texts, **options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(train_texts), model_writer=model, model_type="bpe",
                                   normalization_rule_name="identity", minloglevel=2, num_threads=1,
                                   max_sentence_length=100000, **options)
    return model.getvalue()


# GPT-2's byte → character table (ByteLevel.alphabet() is a set; we need the mapping).
def byte_level_table():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def variant_rows(corpus):
    """The less common pipeline pieces, each swapped into a trained tokenizer.json and run by tokenizers on the
    first 400 corpus strings. The C++ test makes the same swap in the committed file."""
    P, N = pre_tokenizers, normalizers
    variants = [
        ("bl_gpt2", "pre_tokenizer", P.ByteLevel(add_prefix_space=True, use_regex=True)),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(Regex(r"\s+"), "removed"), P.ByteLevel(use_regex=False)])),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(Regex(r"[.,!?]"), "merged_with_previous"),
                                                 P.ByteLevel(use_regex=False)])),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(Regex(r"\s"), "merged_with_next"),
                                                 P.ByteLevel(use_regex=False)])),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(Regex(r"\d"), "contiguous"), P.ByteLevel(use_regex=False)])),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(Regex(r"\p{L}+"), "isolated", invert=True),
                                                 P.ByteLevel(use_regex=False)])),
        ("bl_gpt2", "pre_tokenizer", P.Sequence([P.Split(" ", "isolated"), P.ByteLevel(use_regex=False)])),
        ("sp_metaspace", "pre_tokenizer", P.Metaspace(prepend_scheme="always", split=True)),
        ("sp_metaspace", "pre_tokenizer", P.Metaspace(prepend_scheme="never", split=False)),
        ("sp_legacy", "normalizer", N.Sequence([N.Replace(" ", "▁")])),
    ]
    rows = []
    for base, key, component in variants:
        tok = Tokenizer.from_file(f"{OUT}/{base}/tokenizer.json")
        setattr(tok, key, component)
        tok.encode_special_tokens = True
        rows.append({"base": base, "key": key, "value": json.loads(tok.to_str())[key],
                     "ids": [tok.encode(t, add_special_tokens=False).ids for t in corpus[:400]]})
    return rows


def sp_decode_rows(sp):
    byte_ids = [i for i in range(sp.get_piece_size()) if sp.is_byte(i)]
    return decode_rows(sp.decode, sp.get_piece_size(), byte_ids, SEED + 3)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def ids_rows(encode_plain, encode_special, corpus):
    rows = []
    for text in corpus:
        plain = encode_plain(text)
        row = {"ids": plain}
        if encode_special is not None:
            special = encode_special(text)
            if special != plain:
                row["special"] = special
        rows.append(row)
    return rows


def decode_rows(decode, vocab_size, byte_token_ids, seed):
    """Random id sequences (half of them rich in byte tokens, so runs cut UTF-8 characters) and the reference
    library's decoding of them."""
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        pool = byte_token_ids if (i % 2 and byte_token_ids) else None
        ids = [rng.choice(pool) if pool and rng.random() < 0.7 else rng.randrange(vocab_size)
               for _ in range(rng.randrange(1, 13))]
        rows.append({"ids": ids, "text": decode(ids)})
    return rows


# ---------------------------------------------------------------- chat templates (the families' own Jinja)
TEMPLATES = {
    # meta-llama/Meta-Llama-3-8B-Instruct
    "llama3": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
               "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
               "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
               "{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    # meta-llama/Llama-2-7b-chat-hf
    "llama2": ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
               "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
               "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
               "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
               "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
               "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
               "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
               "{% endfor %}"),
    # mistralai/Mistral-7B-Instruct-v0.2 (the revision with system-message support)
    "mistral": ("{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
                "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
                "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
                "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
                "        {{- raise_exception('After the optional system message, conversation roles must alternate "
                "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
                "        {%- if loop.first and system_message is defined %}\n"
                "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
                "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
                "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
                "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n"
                "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
                "initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"),
    # ChatML (e.g. Qwen / OpenHermes)
    "chatml": ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
               "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # plain: no template, the contents one after the other
    "plain": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
}
# template → (tokenizer fixture whose ids are compared, bos, eos)
TEMPLATE_TOKENIZER = {"llama3": ("bl_llama3", "<|begin_of_text|>", "<|eot_id|>"),
                      "llama2": ("sp_legacy", "<s>", "</s>"), "mistral": ("sp_metaspace", "<s>", "</s>"),
                      "chatml": ("bl_gpt2", "<|endoftext|>", "<|im_end|>"), "plain": ("bl_gpt2", "<|endoftext|>",
                                                                                      "<|endoftext|>")}
# The folder whose tokenizer_config.json carries each family's template (read by "auto").
TEMPLATE_CONFIG_DIR = {"llama3": "bl_llama3", "llama2": "sp_legacy", "mistral": "sp_metaspace", "chatml": "bl_gpt2"}


def conversations(rng):
    convs = [
        [{"role": "user", "content": "Hello!"}],
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "2 + 2 = 4."}],
        [{"role": "user", "content": "  padded question \n"}, {"role": "assistant", "content": "\tpadded answer  "},
         {"role": "user", "content": "Next one: café, 東京, 🤖?"}],
        [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Line one\nLine two\n\nEnd"},
         {"role": "assistant", "content": "Noted:\n- one\n- two"}, {"role": "user", "content": "Thanks"},
         {"role": "assistant", "content": "You're welcome!"}],
        [{"role": "user", "content": "def f(x):\n    return x\n"}, {"role": "assistant", "content": "It returns x."}],
    ]
    for _ in range(5):
        conv = []
        if rng.random() < 0.5:
            conv.append({"role": "system", "content": sentence(rng)})
        for turn in range(rng.randrange(1, 4)):
            conv.append({"role": "user", "content": make_string(rng)})
            if turn < 2 or rng.random() < 0.5:
                conv.append({"role": "assistant", "content": make_string(rng)})
        convs.append(conv)
    return convs


def chat_fixture(tokenizers_dir, rng):
    from transformers import PreTrainedTokenizerFast
    cases = []
    for name, template in TEMPLATES.items():
        tok_name, bos, eos = TEMPLATE_TOKENIZER[name]
        hf = PreTrainedTokenizerFast(tokenizer_file=f"{tokenizers_dir}/{tok_name}/tokenizer.json", bos_token=bos,
                                     eos_token=eos)
        hf.chat_template = template
        for conv in conversations(rng):
            if name == "mistral" and any(m["role"] == "system" for m in conv[1:]):
                continue
            for generation_prompt in (False, True):
                text = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=generation_prompt)
                ids = hf.apply_chat_template(conv, tokenize=True, add_generation_prompt=generation_prompt)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                # Ids compare only where user text cannot be read as special tokens (it never is, in ours).
                added = [t.content for t in hf.added_tokens_decoder.values()]
                user_specials = any(s in m["content"] for m in conv for s in added)
                cases.append({"template": name, "tokenizer": tok_name, "messages": conv,
                              "add_generation_prompt": generation_prompt, "text": text,
                              "ids": None if user_specials else list(ids)})
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    corpus = make_corpus(SEED, N_TEST)
    train_texts = make_corpus(SEED + 1, 6000) + corpus
    write_jsonl(f"{OUT}/corpus.jsonl", corpus)

    def save_hf(name, tok, template=None, bos=None, eos=None):
        os.makedirs(f"{OUT}/{name}", exist_ok=True)
        tok.save(f"{OUT}/{name}/tokenizer.json")
        config = {"bos_token": bos, "eos_token": eos}
        if template:
            config["chat_template"] = TEMPLATES[template]
        with open(f"{OUT}/{name}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)

        def special(text):
            tok.encode_special_tokens = False
            return tok.encode(text, add_special_tokens=False).ids

        def plain(text):
            tok.encode_special_tokens = True
            ids = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            return ids
        write_jsonl(f"{OUT}/{name}.ids.jsonl", ids_rows(plain, special, corpus))
        vocab = tok.get_vocab()
        byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab]
        write_jsonl(f"{OUT}/{name}.decode.jsonl", decode_rows(lambda ids: tok.decode(ids, skip_special_tokens=False),
                                                              tok.get_vocab_size(), byte_ids, SEED + 3))

    llama3 = train_byte_level(train_texts, True, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                  "<|end_header_id|>", "<|eot_id|>"], 3000)
    llama3.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                          special_tokens=[("<|begin_of_text|>", 0)])
    save_hf("bl_llama3", llama3, "llama3", "<|begin_of_text|>", "<|eot_id|>")

    gpt2 = train_byte_level(train_texts, False, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 3000)
    gpt2.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    save_hf("bl_gpt2", gpt2, "chatml", "<|endoftext|>", "<|im_end|>")

    legacy, metaspace = train_sp_style(train_texts, 2000)
    save_hf("sp_legacy", legacy, "llama2", "<s>", "</s>")
    save_hf("sp_metaspace", metaspace, "mistral", "<s>", "</s>")

    for name, options in [("sp_model", dict(vocab_size=1500, byte_fallback=True, character_coverage=0.995,
                                            remove_extra_whitespaces=False, split_digits=True,
                                            allow_whitespace_only_pieces=True, user_defined_symbols=["<tool>"])),
                          ("sp_model_clean", dict(vocab_size=800, character_coverage=0.99,
                                                  remove_extra_whitespaces=True))]:
        model = train_sentencepiece(train_texts, **options)
        os.makedirs(f"{OUT}/{name}", exist_ok=True)
        with open(f"{OUT}/{name}/tokenizer.model", "wb") as f:
            f.write(model)
        sp = spm.SentencePieceProcessor(model_proto=model)
        write_jsonl(f"{OUT}/{name}.ids.jsonl", ids_rows(sp.encode, None, corpus))
        write_jsonl(f"{OUT}/{name}.decode.jsonl", sp_decode_rows(sp))

    # tiktoken file from bl_llama3's vocabulary, checked by the tiktoken library itself.
    table = byte_level_table()
    specials = {t.content for t in llama3.get_added_tokens_decoder().values()}
    ranks = {}
    for piece, _ in sorted(llama3.get_vocab().items(), key=lambda kv: kv[1]):
        if piece not in specials:
            ranks[bytes(table[c] for c in piece)] = len(ranks)
    os.makedirs(f"{OUT}/tiktoken", exist_ok=True)
    with open(f"{OUT}/tiktoken/tokenizer.model", "w") as f:
        for token, rank in ranks.items():
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    enc = tiktoken.Encoding("stapo_llama3_test", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: len(ranks) + i for i, s in enumerate(LLAMA3_SPECIALS)})
    write_jsonl(f"{OUT}/tiktoken.ids.jsonl",
                ids_rows(lambda t: enc.encode(t, disallowed_special=()), lambda t: enc.encode(t, allowed_special="all"),
                         corpus))
    write_jsonl(f"{OUT}/tiktoken.decode.jsonl", decode_rows(enc.decode, enc.n_vocab, list(range(256)), SEED + 3))

    real = f"{SHARED}/tokenizers/llama2/tokenizer.model"
    if os.path.exists(real):
        sp = spm.SentencePieceProcessor(model_file=real)
        write_jsonl(f"{OUT}/llama2_real.ids.jsonl", ids_rows(sp.encode, None, corpus))
        write_jsonl(f"{OUT}/llama2_real.decode.jsonl", sp_decode_rows(sp))
    else:
        print(f"warning: {real} not found; llama2_real.ids.jsonl not regenerated", file=sys.stderr)

    with open(f"{OUT}/variants.json", "w", encoding="utf-8") as f:
        json.dump(variant_rows(corpus), f, ensure_ascii=False, separators=(",", ":"))
    with open(f"{OUT}/chat_templates.json", "w", encoding="utf-8") as f:
        json.dump(chat_fixture(OUT, random.Random(SEED + 2)), f, ensure_ascii=False, indent=0)
    print(f"wrote {OUT}: {len(corpus)} strings")


if __name__ == "__main__":
    main()
