#!/usr/bin/env python3
"""Throughput of ./prepare_data (pairs/s) on a synthetic preference JSONL.

Writes N pairs (default 10,000) of random English-like text, prompts ~40-160 words and responses ~20-300
words, half in the plain layout and half as TRL message lists (two files, so both parsers run), then times
prepare_data end to end (tokenizer load, parsing, tokenization, truncation, shard write) for each tokenizer
given, best of --repeats runs.

Usage: python3 dev/bench/prepare_data_throughput.py [--pairs 10000] [--repeats 3]
         [--tokenizer tests/fixtures/data/tokenizer:llama3] [--tokenizer ../shared/tokenizers/llama2/tokenizer.model:llama2]
"""
import argparse
import json
import os
import random
import re
import resource
import subprocess
import tempfile
import time

WORDS = ("the of and to in is was for that on as with by he at from his it an were are which this be or has had "
         "not but also first one their its new after who they have her she two been other when there all during "
         "into school time may years more most only over city some world would where later up such used many can "
         "state about national out known university united then made explain because answer question model "
         "résumé café naïve 東京 🙂 2024 3.14 don't it's").split()


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def write_inputs(directory, pairs, rng):
    paths = [os.path.join(directory, "plain.jsonl"), os.path.join(directory, "conversational.jsonl")]
    with open(paths[0], "w") as plain, open(paths[1], "w") as conv:
        for i in range(pairs):
            prompt, chosen, rejected = text(rng, 40, 160), text(rng, 20, 300), text(rng, 20, 300)
            if i % 2 == 0:
                plain.write(json.dumps({"id": i, "prompt": prompt, "chosen": chosen, "rejected": rejected},
                                       ensure_ascii=False) + "\n")
            else:
                conv.write(json.dumps({"id": i, "prompt": [{"role": "user", "content": prompt}],
                                       "chosen": [{"role": "assistant", "content": chosen}],
                                       "rejected": [{"role": "assistant", "content": rejected}]},
                                      ensure_ascii=False) + "\n")
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--binary", default="./prepare_data")
    parser.add_argument("--tokenizer", action="append", help="PATH:TEMPLATE (repeatable)")
    args = parser.parse_args()
    tokenizers = args.tokenizer or ["tests/fixtures/data/tokenizer:llama3"]
    shared_llama2 = "../shared/tokenizers/llama2/tokenizer.model"
    if not args.tokenizer and os.path.exists(shared_llama2):
        tokenizers.append(shared_llama2 + ":llama2")

    with tempfile.TemporaryDirectory() as directory:
        inputs = write_inputs(directory, args.pairs, random.Random(1))
        size_mb = sum(os.path.getsize(p) for p in inputs) / 1e6
        print(f"{args.pairs} pairs, {size_mb:.1f} MB of JSONL")
        for spec in tokenizers:
            path, template = spec.rsplit(":", 1)
            command = [args.binary, "--tokenizer", path, "--template", template, "--out",
                       os.path.join(directory, "out.bin"), "--max-length", "1024", "--max-prompt-length", "512"]
            for p in inputs:
                command += ["--in", p]
            best, best_cpu, report = None, None, ""
            for _ in range(args.repeats):
                cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                seconds = time.perf_counter() - start
                cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
                if best is None or seconds < best:
                    best, report = seconds, done.stdout
                best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
            tokens = int(re.search(r"\((\d+) tokens\)", report).group(1))
            # CPU seconds say what one core does even on a loaded machine, where wall time does not.
            print(f"{path} ({template}): best of {args.repeats} {best:.2f} s wall = {args.pairs / best:,.0f} pairs/s, "
                  f"{tokens / best / 1e6:.2f} M tokens/s; {best_cpu:.2f} CPU s = {args.pairs / best_cpu:,.0f} "
                  f"pairs per CPU-second ({tokens:,} tokens written)")


if __name__ == "__main__":
    main()
