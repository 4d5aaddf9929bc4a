#!/usr/bin/env python3
"""PyTorch CPU fp32 baseline for bench_cpu_model (dev/bench/cpu_model.cpp): the same random Llama shape in
transformers' LlamaForCausalLM (default sdpa attention), one forward + backward of Σ w_t·logp_t, logp from
materialised logits via log_softmax + gather. Prints one JSON line with the median time.

  OMP_NUM_THREADS=2 python3 dev/bench/cpu_model_torch.py --threads 2
"""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("layers", 4), ("hidden", 256), ("heads", 8), ("kv-heads", 4), ("ffn", 768),
                          ("vocab", 32000), ("seq", 256), ("batch", 4), ("warmup", 1), ("iters", 5), ("threads", 2)):
        p.add_argument("--" + name, type=int, default=default)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                         num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                         max_position_embeddings=a.seq, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).float().train()
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.cat([tokens[:, 1:], torch.full((a.batch, 1), -1)], dim=1)
    valid = targets >= 0
    w = torch.randn(a.batch, a.seq) * valid
    times = []
    for it in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        logits = model(input_ids=tokens).logits
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        (w * logp).sum().backward()
        if it >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(times)
    print(json.dumps({"impl": "torch", "median_ms": round(med, 1), "min_ms": round(min(times), 1),
                      "tokens_per_s": round(a.batch * a.seq / med * 1000), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
