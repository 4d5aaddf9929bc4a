#!/usr/bin/env python3
"""Fixture for tests/demo/test_synthetic_tokenizer.cpp: the demo's tiny tokenizer, as written by OUR
make_synthetic_data, read by HF transformers/tokenizers, which give the reference ids and texts.

  python3 dev/reference/make_synthetic_fixtures.py [./make_synthetic_data]
      # writes tests/fixtures/synthetic/{tokenizer.json, tokenizer_config.json, hf_reference.json}

hf_reference.json: the make_synthetic_data flags used, and for the first pairs of train.jsonl:
  chat_text / chat_ids             apply_chat_template([user prompt, assistant chosen]) text and its ids
  generation_text / generation_ids apply_chat_template([user prompt], add_generation_prompt=True)
  rejected_ids                     the rejected answer encoded as plain text (malformed ones included)
  decoded                          tokenizer.decode(chat_ids) (special tokens kept)
The test regenerates the tokenizer with the same flags and requires byte-identical files, so a change to the
tokenizer builder means rerunning this script.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ARGS = ["--pairs", "300", "--eval", "20", "--seed", "5"]
CASES = 40


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "make_synthetic_data")
    out_dir = os.path.join(ROOT, "tests", "fixtures", "synthetic")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([binary, "--out", tmp] + ARGS, check=True)
        for name in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(tmp, name), os.path.join(out_dir, name))
        with open(os.path.join(tmp, "train.jsonl")) as f:
            pairs = [json.loads(line) for line in f][:CASES]
    tok = AutoTokenizer.from_pretrained(out_dir)
    cases = []
    for p in pairs:
        chat = [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}]
        chat_text = tok.apply_chat_template(chat, tokenize=False)
        generation_text = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
        chat_ids = tok(chat_text, add_special_tokens=False)["input_ids"]
        cases.append({
            "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
            "chat_text": chat_text, "chat_ids": chat_ids,
            "generation_text": generation_text,
            "generation_ids": tok(generation_text, add_special_tokens=False)["input_ids"],
            "rejected_ids": tok(p["rejected"], add_special_tokens=False)["input_ids"],
            "decoded": tok.decode(chat_ids, skip_special_tokens=False),
        })
    reference = {"version": 1, "make_synthetic_data_args": ARGS, "vocab_size": len(tok),
                 "eos_token_id": tok.eos_token_id, "cases": cases}
    with open(os.path.join(out_dir, "hf_reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"wrote {out_dir}: vocab {len(tok)}, {len(cases)} cases; first: {cases[0]['chat_ids']}")


if __name__ == "__main__":
    main()
