#!/usr/bin/env python3
"""PyTorch baselines for dev/bench/gpu_step: the same model shape, batch and loss in transformers'
LlamaForCausalLM, the loss from materialised logits via log_softmax + gather, gradients clipped at 1 as ours.
Three baselines, each a JSON line (and a row of docs/benchmarks.md):

  pure_bf16     weights, gradients and AdamW states in bf16, causal sdpa attention, fused AdamW (the one before
                issue #15; compare ours with --bf16-params to it)
  amp           like-for-like with our default: fp32 master weights, autocast to bf16, fused AdamW (fp32 states),
                FlashAttention SDPA (forced: the step fails rather than fall back to another backend)
  amp_compile   amp with the model under torch.compile

Each result has the median step time, tokens/s, MFU (the needed-FLOPs formula shared with train/model_flops.h),
peak device memory measured as gpu_step measures ours (cudaMemGetInfo: device memory in use beyond what was in
use before the model, sampled after every step; PyTorch's cached blocks count, as our buffers do) beside
torch's own max allocated and reserved figures, and (--phases, eager baselines) a per-phase breakdown of one
profiled step from torch.profiler: the GPU time of the kernels each phase launched (forward ops by the module
that ran them, backward ops by the forward op they differentiate), with the step time not covered by kernels
as "gaps".

  python3 dev/bench/torch_baseline.py [--config dev/bench/gpu_step_config.json] [--baseline amp] [--phases]
      [--min-seconds 60] [--out result.json]          # --out: one JSON for one baseline, a list for several
  python3 dev/bench/torch_baseline.py --tiny --device cpu --phases    # a seconds-long smoke run of this script

A config's batch "micro_batches" (default 1) are accumulated into each optimizer step, as gpu_step does. A config
with "memory_cap_gib" (dev/bench/gpu_step_8b.json) caps PyTorch's allocator at that much of the card, as ours is
capped. Running out of memory is a result, not a crash: the baseline's JSON then says "oom": true, where, what
PyTorch had allocated when it failed and the allocation it was refused.
"""
import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface, LlamaConfig, LlamaForCausalLM

BASELINES = ("pure_bf16", "amp", "amp_compile")
# The phases of gpu_step's breakdown, in train/phase_timer.h's order (tests/train/test_phase_timer.cpp checks
# that the lists agree). PyTorch's step has no recompute phase here (no activation checkpointing): 0.
PHASES = ("embedding", "norm_forward", "matmul_forward", "elementwise_forward", "attention_forward",
          "lm_head_loss", "recompute", "norm_backward", "matmul_backward", "elementwise_backward",
          "attention_backward", "grad_clip", "optimizer", "other")


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


# ---- attention: transformers' sdpa call without a mask ----

def causal_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """What transformers' "sdpa" attention runs in eager mode on unpadded rows (is_causal, no mask, GQA inside the
    kernel), in every mode: under torch.compile transformers materialises a mask, which FlashAttention refuses
    (seen on an H200, torch 2.11, transformers 5.17). The benchmark's rows hold one unpadded sequence each."""
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("causal_sdpa", causal_sdpa)
AttentionMaskInterface.register("causal_sdpa", lambda *args, **kwargs: None)  # the kernel masks; none to build


# ---- the per-phase breakdown from torch.profiler ----

def phase_of_module(name, module, lm_head):
    """The forward phase of the ops a module runs itself (not in a child module that has a phase of its own)."""
    kind = type(module).__name__
    if module is lm_head:
        return "lm_head_loss"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if "RMSNorm" in kind:
        return "norm"
    if isinstance(module, torch.nn.Linear):
        return "matmul"
    if kind.endswith(("Attention", "MLP", "RotaryEmbedding")) or "act_fn" in name:
        return "elementwise"  # RoPE, reshapes, SiLU and the SwiGLU product: what these run outside their children
    return None


@contextlib.contextmanager
def phase_scopes(model):
    """record_function("phase::X") around every module with a phase and around F.scaled_dot_product_attention
    (the attention core inside the attention module), so the profiler's op tree says which phase ran each op."""
    handles, open_scopes = [], []
    lm_head = model.get_output_embeddings()
    for name, module in model.named_modules():
        phase = phase_of_module(name, module, lm_head)
        if phase is None:
            continue

        def pre(_module, _args, phase=phase):
            scope = torch.profiler.record_function("phase::" + phase)
            scope.__enter__()
            open_scopes.append(scope)

        def post(_module, _args, _output):
            open_scopes.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    sdpa = F.scaled_dot_product_attention

    def timed_sdpa(*args, **kwargs):
        with torch.profiler.record_function("phase::attention"):
            return sdpa(*args, **kwargs)

    F.scaled_dot_product_attention = timed_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa
        for h in handles:
            h.remove()


def phase_breakdown(prof, device_is_cuda):
    """Milliseconds per phase: each op's own kernels (CPU: its own CPU time) go to the phase of its innermost
    phase:: scope; ops under an autograd evaluate_function go to the backward phase of the forward op with that
    sequence number (the same (thread, sequence_nr)). Lone scopes without a suffix (lm_head_loss, embedding,
    grad_clip, optimizer) merge forward and backward."""
    events = list(prof.events())

    def scope_of(e):
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("phase::"):
                return p.name[len("phase::"):]
            p = p.cpu_parent
        return None

    forward_phase = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") and "Backward" not in e.name:
            forward_phase.setdefault((e.thread, e.sequence_nr), scope_of(e))

    def phase_of(e):
        p = e
        while p is not None:
            if p.name.startswith("autograd::engine::evaluate_function:"):
                base = forward_phase.get((p.fwd_thread, p.sequence_nr))
                if base in ("lm_head_loss", "embedding"):
                    return base
                return base + "_backward" if base in ("norm", "matmul", "elementwise", "attention") else "other"
            p = p.cpu_parent
        base = scope_of(e)
        if base in ("norm", "matmul", "elementwise", "attention"):
            return base + "_forward"
        return base if base in PHASES else "other"

    ms = {phase: 0.0 for phase in PHASES}
    for e in events:
        # Annotations (ours, and torch's own such as "Optimizer.step#AdamW.step") carry their GPU range as a
        # "kernel" of their own name: counting it counted the kernels inside twice (seen on an H200).
        if e.name.startswith("phase::") or getattr(e, "is_user_annotation", False):
            continue
        if device_is_cuda:
            own = sum(k.duration for k in e.kernels if k.name != e.name) / 1000.0
        else:
            own = e.self_cpu_time_total / 1000.0
        if own > 0:
            ms[phase_of(e)] += own
    return ms


# ---- one baseline ----

def build(bench, cfg, baseline, device):
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"}, attn_implementation="causal_sdpa")
    cuda = device.type == "cuda"
    weight_dtype = torch.bfloat16 if baseline == "pure_bf16" and cuda else torch.float32
    # Built on the device in its final dtype: an 8B model never exists on the host, nor in fp32 for pure_bf16.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(weight_dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=bench["optimizer"]["lr"],
                                  weight_decay=bench["optimizer"]["weight_decay"], fused=cuda)
    forward_model = torch.compile(model) if baseline == "amp_compile" else model
    return model, forward_model, optimizer


def run_baseline(bench, cfg, batch, timing, baseline, device, phases, min_seconds):
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        return measure_baseline(bench, cfg, batch, timing, baseline, device, phases, min_seconds)
    except torch.cuda.OutOfMemoryError as e:
        # What PyTorch held when it failed and the allocation it was refused ("Tried to allocate ..." from the
        # error's first line), so the result says how far from fitting it was.
        return {
            "impl": "pytorch", "baseline": baseline, "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "oom": True,
            "oom_during": getattr(e, "stapo_during", "building the model or the profiled step"),
            "error": str(e).splitlines()[0],
            "allocated_gib_at_oom": torch.cuda.memory_allocated() / 2**30,
            "torch_max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
    finally:
        if cuda:
            torch.cuda.empty_cache()  # what the failed baseline held goes back before the next one


def measure_baseline(bench, cfg, batch, timing, baseline, device, phases, min_seconds):
    cuda = device.type == "cuda"
    if cuda:
        free, total = torch.cuda.mem_get_info()
        in_use_before = total - free
    model, forward_model, optimizer = build(bench, cfg, baseline, device)
    sequences, seq_len, prompt_len = 2 * batch["pairs"], batch["seq_len"], batch["prompt_len"]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg["vocab_size"], (sequences, seq_len), generator=generator).to(device)
    # Response-only mask: targets are the next tokens after the prompt.
    mask = torch.zeros(sequences, seq_len - 1, device=device)
    mask[:, prompt_len - 1:] = 1.0
    lengths = mask.sum(dim=1)
    autocast = baseline != "pure_bf16" and cuda
    micro_batches = batch.get("micro_batches", 1)

    def attention_backend():
        if autocast:  # the like-for-like rows run FlashAttention or fail: no silent fallback
            from torch.nn.attention import SDPBackend, sdpa_kernel
            return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def region(phase, gpu_times):
        """A phase:: scope for the profiler; in the profiled CUDA step also CUDA events around it (gpu_times
        gets its start and end), as gpu_step times ours. The profiler's own attribution of the clip and the
        optimizer counted some kernels many times over in the amp baseline (torch 2.11, an H200: 269 ms of
        optimizer kernels in a 205 ms step), so those two phases are these events' times."""
        with torch.profiler.record_function("phase::" + phase):
            if gpu_times is None:
                yield
                return
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            gpu_times[phase] = (start, end)

    def step(gpu_times=None):
        for _ in range(micro_batches):
            with attention_backend(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = forward_model(input_ids=tokens).logits
                with torch.profiler.record_function("phase::lm_head_loss"):
                    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, tokens[:, 1:, None])
                    loss = stapo_loss((logp.squeeze(-1) * mask).sum(dim=1), lengths, bench["loss"]) / micro_batches
            loss.backward()
        with region("grad_clip", gpu_times):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with region("optimizer", gpu_times):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss

    peak_in_use = 0
    times = []
    started = None
    i = 0
    while True:
        try:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1000.0
                free, total = torch.cuda.mem_get_info()
                peak_in_use = max(peak_in_use, total - free - in_use_before)
            else:
                t0 = time.perf_counter()
                step()
                elapsed = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError as e:
            e.stapo_during = f"step {i + 1}"
            raise
        i += 1
        if i > timing["warmup_steps"]:
            times.append(elapsed)
            started = started or time.perf_counter() - elapsed
        if len(times) >= timing["steps"] and time.perf_counter() - started >= min_seconds:
            break

    median = statistics.median(times)
    # The loss reads the targets at positions prompt_len - 1 .. seq_len - 2 of each sequence.
    flops = micro_batches * model_flops_per_step(cfg, sequences, seq_len, sequences * (seq_len - prompt_len))
    flops_all_tokens = micro_batches * model_flops_per_step(cfg, sequences, seq_len, sequences * seq_len)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in bench["peak_bf16_tflops"].items() if k != "_comment" and k in name), None)
    result = {
        "impl": "pytorch", "baseline": baseline, "device": name, "torch": torch.__version__,
        "median_step_s": median, "timed_steps": len(times), "timed_s": sum(times),
        "tokens_per_s": micro_batches * sequences * seq_len / median,
        "model_tflops_per_step": flops / 1e12,
        "model_tflops_per_step_all_tokens": flops_all_tokens / 1e12,
        "mfu": (flops / median / 1e12 / peak) if peak else None,
        "mfu_all_tokens": (flops_all_tokens / median / 1e12 / peak) if peak else None,
        "peak_memory_gib": peak_in_use / 2**30 if cuda else None,
        "torch_max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "torch_max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
    }
    if phases and baseline != "amp_compile":
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with phase_scopes(model), torch.profiler.profile(activities=activities) as prof:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            gpu_times = {} if cuda else None
            step(gpu_times)
            if cuda:
                end.record()
                torch.cuda.synchronize()
            profiled_ms = start.elapsed_time(end) if cuda else (time.perf_counter() - t0) * 1000.0
        ms = phase_breakdown(prof, cuda)
        for phase, (region_start, region_end) in (gpu_times or {}).items():
            ms[phase] = region_start.elapsed_time(region_end)
        counted = sum(ms.values())
        ms["gaps"] = max(0.0, profiled_ms - counted)  # step time in no kernel (launches, host waits)
        result["phases_ms"] = ms
        result["profiled_step_ms"] = profiled_ms
        if counted > 1.01 * profiled_ms:  # kernels counted twice somewhere: the table is not to be trusted
            result["phases_overcounted_ms"] = counted - profiled_ms
            print(f"WARNING: the phases add up to {counted:.1f} ms, over the profiled step's {profiled_ms:.1f} ms: "
                  "the profiler attributed some kernels more than once", flush=True)
    del model, forward_model, optimizer
    return result


def print_phases(result):
    ms = result["phases_ms"]
    total = result["profiled_step_ms"]
    print(f"phases of one profiled step ({result['baseline']}, {total:.1f} ms; kernel time per phase):")
    for phase, value in ms.items():
        print(f"  {phase:22s} {value:9.2f} ms {100 * value / total:6.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="dev/bench/gpu_step_config.json")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    parser.add_argument("--baseline", default="all", choices=BASELINES + ("all",))
    parser.add_argument("--phases", action="store_true", help="a per-phase breakdown of one profiled step")
    parser.add_argument("--min-seconds", type=float, default=0.0,
                        help="keep timing steps until this many seconds have passed (the MFU claim: 60)")
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
    cap = bench.get("memory_cap_gib")
    if cap and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total), device)
    baselines = BASELINES if args.baseline == "all" else (args.baseline,)
    if device.type != "cuda":
        baselines = tuple(b for b in baselines if b != "amp_compile")  # compiling takes minutes on a CPU
    results = []
    for baseline in baselines:
        result = run_baseline(bench, cfg, batch, timing, baseline, device, args.phases, args.min_seconds)
        print(json.dumps(result))
        if "phases_ms" in result:
            print_phases(result)
        results.append(result)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=1)


if __name__ == "__main__":
    main()
