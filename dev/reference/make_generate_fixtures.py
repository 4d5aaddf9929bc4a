#!/usr/bin/env python3
"""Fixture for tests/demo/test_generate.cpp: what transformers' generate() (greedy, its own KV cache) produces
on the model fixtures' tiny checkpoints (tests/fixtures/model/{llama,mistral}, written by make_model_fixtures.py).

  python3 dev/reference/make_generate_fixtures.py      # writes tests/fixtures/generate/greedy.json

For each model and a few random prompts: the greedy continuation (max_new_tokens steps, no stop token) and,
per step, the gap between the best and second-best logit, so the test can tell a real mismatch from a
near-tie that fp32 rounding may flip. The checkpoint's sha256 is stored: regenerating the model fixtures
requires regenerating this file (the test says so).
"""
import hashlib
import json
import os

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODELS = ["llama", "mistral"]
PROMPT_LENGTHS = [1, 4, 9]
MAX_NEW_TOKENS = 24  # with 9 prompt tokens: 33 positions, past mistral's window (5) many times


def main():
    torch.manual_seed(1234)
    out = {"version": 1, "max_new_tokens": MAX_NEW_TOKENS, "models": {}}
    for name in MODELS:
        directory = os.path.join(ROOT, "tests", "fixtures", "model", name)
        with open(os.path.join(directory, "model.safetensors"), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        cases = []
        for length in PROMPT_LENGTHS:
            prompt = torch.randint(0, model.config.vocab_size, (1, length))
            with torch.no_grad():
                result = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=MAX_NEW_TOKENS,
                                        min_new_tokens=MAX_NEW_TOKENS, do_sample=False, use_cache=True,
                                        output_scores=True, return_dict_in_generate=True, eos_token_id=None,
                                        pad_token_id=0)
            generated = result.sequences[0, length:].tolist()
            gaps = []
            for scores in result.scores:
                top = torch.topk(scores[0], 2).values
                gaps.append(float(top[0] - top[1]))
            cases.append({"prompt": prompt[0].tolist(), "generated": generated, "top2_gap": gaps})
            print(f"{name}: prompt {length} tokens -> {generated[:8]}... smallest top-2 gap {min(gaps):.2e}")
        out["models"][name] = {"sha256": sha, "cases": cases}
    path = os.path.join(ROOT, "tests", "fixtures", "generate", "greedy.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
