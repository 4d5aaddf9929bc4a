#!/usr/bin/env python3
"""PyTorch baseline for dev/bench/gpu_step: the same model shape, batch and loss in transformers'
LlamaForCausalLM (bf16, sdpa attention, fused AdamW), the loss from materialised logits via
log_softmax + gather. Prints one JSON line with median step time, tokens/s, MFU and peak memory.

  python3 dev/bench/torch_baseline.py [--config dev/bench/gpu_step_config.json] [--out result.json]
  python3 dev/bench/torch_baseline.py --tiny --device cpu     # a seconds-long smoke run of this script

A config with "memory_cap_gib" (dev/bench/gpu_step_8b.json) caps PyTorch's allocator at that much of the card, as
ours is capped. Running out of memory is a result, not a crash: the JSON then says "oom": true, what PyTorch
had allocated when it failed and the allocation it was refused.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def model_flops_per_step(cfg, sequences, seq_len, lm_head_rows):
    """Training FLOPs (forward + backward = 3x forward) of the matmuls, causal attention counted once per
    visible pair, the lm_head on `lm_head_rows` rows. The same formula is train/model_flops.h's (gpu_step):
    the needed count puts the lm_head on the response targets only (what the loss reads), the all-token count
    (the number before engine v2) on every token."""
    d, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or d // heads
    per_token_layer = 2 * d * (heads * head_dim + 2 * kv_heads * head_dim) + 2 * heads * head_dim * d + 2 * 3 * d * f
    lm_head = 2 * d * cfg["vocab_size"]
    tokens = sequences * seq_len
    attention = layers * 2 * 2 * heads * head_dim * (seq_len * (seq_len + 1) / 2) * sequences  # QK^T and PV
    return 3 * (tokens * layers * per_token_layer + lm_head_rows * lm_head + attention)


def stapo_loss(logps_sum, lengths, loss_cfg):
    """StaPO (sigmoid form) on avg rewards, chosen = even rows, rejected = odd rows."""
    avg = logps_sum / lengths
    beta, delta = loss_cfg["beta"], avg[0::2] - avg[1::2]
    ml, mr, lr = loss_cfg["margin_left"], loss_cfg["margin_right"], loss_cfg["lambda_right"]
    return (-F.logsigmoid(beta * (delta - ml)) - lr * F.logsigmoid(beta * (mr - delta))).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="dev/bench/gpu_step_config.json")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrink the model (a smoke test of this script)")
    args = parser.parse_args()

    bench = json.load(open(args.config))
    cfg = dict(bench["model"])
    batch, timing = bench["batch"], dict(bench["timing"])
    if args.tiny:
        cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, vocab_size=512, bos_token_id=1, eos_token_id=2)
        batch = dict(batch, seq_len=64, prompt_len=32)
        timing.update(warmup_steps=1, steps=2)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"}, attn_implementation="sdpa")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    cap = bench.get("memory_cap_gib")
    if cap and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total), device)
    # Built on the device in its final dtype: an 8B model never exists in fp32 or on the host.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    except torch.cuda.OutOfMemoryError as e:
        return report_oom(args, name, "building the model", e)
    finally:
        torch.set_default_dtype(default_dtype)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=bench["optimizer"]["lr"],
                                  weight_decay=bench["optimizer"]["weight_decay"], fused=device.type == "cuda")

    sequences, seq_len, prompt_len = 2 * batch["pairs"], batch["seq_len"], batch["prompt_len"]
    tokens = torch.randint(0, cfg["vocab_size"], (sequences, seq_len), device=device)
    # Response-only mask: targets are the next tokens after the prompt.
    mask = torch.zeros(sequences, seq_len - 1, device=device)
    mask[:, prompt_len - 1:] = 1.0
    lengths = mask.sum(dim=1)

    micro_batches = batch.get("micro_batches", 1)  # accumulated into each optimizer step, as gpu_step does

    def step():
        for _ in range(micro_batches):
            logits = model(input_ids=tokens).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
            loss = stapo_loss((logp * mask).sum(dim=1), lengths, bench["loss"]) / micro_batches
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    times = []
    for i in range(timing["warmup_steps"] + timing["steps"]):
        try:
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1000.0
            else:
                t0 = time.perf_counter()
                step()
                elapsed = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError as e:
            return report_oom(args, name, f"step {i + 1}", e)
        if i >= timing["warmup_steps"]:
            times.append(elapsed)

    median = statistics.median(times)
    # The loss reads the targets at positions prompt_len - 1 .. seq_len - 2 of each sequence.
    flops = micro_batches * model_flops_per_step(cfg, sequences, seq_len, sequences * (seq_len - prompt_len))
    flops_all_tokens = micro_batches * model_flops_per_step(cfg, sequences, seq_len, sequences * seq_len)
    peak = next((v for k, v in bench["peak_bf16_tflops"].items() if k != "_comment" and k in name), None)
    result = {
        "impl": "pytorch", "device": name, "torch": torch.__version__,
        "median_step_s": median, "tokens_per_s": micro_batches * sequences * seq_len / median,
        "model_tflops_per_step": flops / 1e12,
        "model_tflops_per_step_all_tokens": flops_all_tokens / 1e12,
        "mfu": (flops / median / 1e12 / peak) if peak else None,
        "mfu_all_tokens": (flops_all_tokens / median / 1e12 / peak) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    write_result(args, result)


def write_result(args, result):
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


def report_oom(args, name, where, error):
    """The run ran out of memory: what PyTorch held then and the allocation it was refused ("Tried to allocate
    ..." from the error's first line), so the result says how far from fitting it was."""
    write_result(args, {
        "impl": "pytorch", "device": name, "torch": torch.__version__, "oom": True, "oom_during": where,
        "error": str(error).splitlines()[0],
        "allocated_gib_at_oom": torch.cuda.memory_allocated() / 2**30,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    })


if __name__ == "__main__":
    main()
