#!/usr/bin/env python3
"""Fixtures for tests/model: tiny random Llama and Mistral checkpoints and what transformers computes on them.

  python3 dev/reference/make_model_fixtures.py                      # writes tests/fixtures/model/
  python3 dev/reference/make_model_fixtures.py --roundtrip ./model_convert
      # loads checkpoints that OUR C++ writer produced (model_convert: fp32, fp32 sharded, bf16) back into
      # transformers and compares their logits with the fixture's; prints the numbers.

Models (float32, random init, eager attention):
  llama:   GQA (4 heads, 2 kv heads), llama3 RoPE scaling with a small original context (32) so every band of
           the rule is used (head_dim 16: wavelengths 6.3 kept, 19.9 blended, 63+ divided), untied lm_head.
  mistral: GQA, sliding_window 5 < T = 16, tied lm_head.
Batch (3 rows, T = 16): a full row, a right-padded row, a packed row (sequences of 7 and 6 tokens, then 3 pads).
The packed row is given to HF as a 4D additive mask plus position_ids restarting per sequence; the script checks
that for the unpacked rows this 4D mask gives the same logits as HF's own 2D-mask path (so our padding and
sliding-window semantics are HF's, off-by-one included).

mistral_f16/, mistral_bf16/: the Mistral checkpoint saved by transformers in F16 and BF16, and
mistral_lowp_io.safetensors: f16.<name>, bf16.<name> = those weights upcast to F32 by torch (what our reader
must produce from the 16-bit files).

<name>_io.safetensors (all F32; integer arrays stored exactly as floats):
  version (1) = 1; tokens, targets, positions, segments, weights (rows, T); logits (rows, T, V);
  logp, entropy (rows, T), 0 where target < 0; grad.<HF parameter name> = d(Σ_t weights_t·logp_t)/dθ.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

FIXTURE_VERSION = 1
ROWS, T = 3, 16
ROW_SEQUENCES = [[16], [10], [7, 6]]  # sequence lengths per row; the rest of a row is padding


def llama_config():
    return LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                       max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       rope_theta=10000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                       attn_implementation="eager")


def mistral_config():
    return MistralConfig(vocab_size=80, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6,
                         max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         rope_theta=10000.0, sliding_window=5, attn_implementation="eager")


def make_batch(vocab, gen):
    tokens = torch.zeros(ROWS, T, dtype=torch.long)
    targets = torch.full((ROWS, T), -1, dtype=torch.long)
    positions = torch.zeros(ROWS, T, dtype=torch.long)
    segments = torch.full((ROWS, T), -1, dtype=torch.long)
    for r, lengths in enumerate(ROW_SEQUENCES):
        start = 0
        for s, n in enumerate(lengths):
            seq = torch.randint(3, vocab, (n,), generator=gen)
            tokens[r, start:start + n] = seq
            targets[r, start:start + n - 1] = seq[1:]
            positions[r, start:start + n] = torch.arange(n)
            segments[r, start:start + n] = s
            start += n
    return tokens, targets, positions, segments


def mask_4d(segments, window):
    """Additive (rows, 1, T, T) mask: query i sees key j iff same segment >= 0, j <= i, i - j < window."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    seg_i, seg_j = segments[:, :, None], segments[:, None, :]
    allowed = (seg_i == seg_j) & (seg_i >= 0) & (j <= i)
    if window:
        allowed = allowed & (i - j < window)
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    mask[~allowed] = torch.finfo(torch.float32).min
    return mask[:, None]


def logits_of(model, tokens, positions, segments, window):
    return model(input_ids=tokens, position_ids=positions, attention_mask=mask_4d(segments, window)).logits


def per_token(logits, targets):
    """log-prob of the target and entropy per position, 0 where target < 0."""
    valid = targets >= 0
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * valid
    entropy = -(logp_all.exp() * logp_all).sum(-1) * valid
    return logp, entropy


def make_fixture(name, config, model_cls, seed, out_dir):
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    with torch.no_grad():  # HF initialises norms to 1; random norms make their gradients meaningful
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(seed + 1)
    tokens, targets, positions, segments = make_batch(config.vocab_size, gen)
    window = getattr(config, "sliding_window", None) or 0

    logits = logits_of(model, tokens, positions, segments, window)
    # HF's own path (2D padding mask, its own causal/sliding-window mask, default position ids) must agree with
    # our 4D mask on the unpacked rows.
    native = model(input_ids=tokens[:2], attention_mask=(segments[:2] >= 0).long()).logits
    valid = segments[:2] >= 0
    diff = (native - logits[:2]).abs()[valid].max().item()
    assert diff < 1e-5, f"{name}: the 4D mask disagrees with HF's own mask by {diff}"

    logp, entropy = per_token(logits, targets)
    weights = torch.randn(ROWS, T, generator=gen) * (targets >= 0)
    model.zero_grad()
    (weights * logp).sum().backward()

    ckpt = os.path.join(out_dir, name)
    model.save_pretrained(ckpt, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(ckpt, extra)
        if os.path.exists(path):
            os.remove(path)
    tensors = {
        "version": torch.tensor([float(FIXTURE_VERSION)]),
        "tokens": tokens.float(), "targets": targets.float(), "positions": positions.float(),
        "segments": segments.float(), "weights": weights,
        "logits": logits.detach(), "logp": logp.detach(), "entropy": entropy.detach(),
    }
    for pname, p in model.named_parameters():
        tensors["grad." + pname] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, f"{name}_io.safetensors"),
              metadata={"generated_by": "dev/reference/make_model_fixtures.py"})
    print(f"{name}: 2D-vs-4D mask max |diff| {diff:.2e}; {len(tensors)} fixture tensors; "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    return model


def save_low_precision(name, model, out_dir):
    """The checkpoint in F16 and BF16 as transformers writes them, and their exact F32 upcasts."""
    expected = {}
    for label, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        low = copy.deepcopy(model).to(dtype)
        low.save_pretrained(os.path.join(out_dir, f"{name}_{label}"), safe_serialization=True)
        for extra in ("generation_config.json",):
            path = os.path.join(out_dir, f"{name}_{label}", extra)
            if os.path.exists(path):
                os.remove(path)
        for pname, p in low.named_parameters():
            expected[f"{label}.{pname}"] = p.detach().float().contiguous()
    subnormal = (expected[f"f16.model.embed_tokens.weight"].abs() < 6.1e-5).sum().item()
    save_file(expected, os.path.join(out_dir, f"{name}_lowp_io.safetensors"),
              metadata={"generated_by": "dev/reference/make_model_fixtures.py"})
    print(f"{name}: F16/BF16 checkpoints written ({subnormal} F16 subnormals or zeros in the embedding)")


def load_io(out_dir, name):
    from safetensors.torch import load_file
    return load_file(os.path.join(out_dir, f"{name}_io.safetensors"))


def roundtrip(convert_bin, out_dir):
    """Our C++ writer's checkpoints, loaded by transformers, must give the fixture's logits."""
    for name in ("llama", "mistral"):
        io = load_io(out_dir, name)
        tokens, positions, segments = (io[k].long() for k in ("tokens", "positions", "segments"))
        window = json.load(open(os.path.join(out_dir, name, "config.json"))).get("sliding_window") or 0
        valid = segments >= 0
        reference = AutoModelForCausalLM.from_pretrained(os.path.join(out_dir, name), dtype=torch.float32,
                                                         attn_implementation="eager").eval()
        for label, flags in (("fp32", ["--dtype", "f32"]), ("fp32 sharded", ["--dtype", "f32", "--shard-bytes", "60000"]),
                             ("bf16", ["--dtype", "bf16"])):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "ckpt")
                subprocess.run([convert_bin, "--in", os.path.join(out_dir, name), "--out", out] + flags, check=True)
                files = sorted(os.listdir(out))
                model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                             attn_implementation="eager").eval()
                with torch.no_grad():
                    got = logits_of(model, tokens, positions, segments, window)
                    if label == "bf16":  # the same weights rounded by torch: our rounding must be torch's
                        for p in reference.parameters():
                            p.copy_(p.to(torch.bfloat16).float())
                    want = logits_of(reference, tokens, positions, segments, window) if label == "bf16" \
                        else io["logits"]
                d = (got - want)[valid]
                rel = (d.norm() / want[valid].norm()).item()
                print(f"roundtrip {name} {label}: files {files}; logits max |diff| {d.abs().max().item():.3e}, "
                      f"rel {rel:.3e}")
                assert rel < 1e-6, f"{name} {label}: transformers' logits of our checkpoint differ (rel {rel})"
        print(f"roundtrip {name}: OK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/model"))
    parser.add_argument("--roundtrip", metavar="MODEL_CONVERT", help="check checkpoints written by our C++ code")
    args = parser.parse_args()
    out_dir = os.path.normpath(args.out)
    torch.use_deterministic_algorithms(True)
    if args.roundtrip:
        roundtrip(args.roundtrip, out_dir)
        return
    os.makedirs(out_dir, exist_ok=True)
    make_fixture("llama", llama_config(), LlamaForCausalLM, 1234, out_dir)
    mistral = make_fixture("mistral", mistral_config(), MistralForCausalLM, 4321, out_dir)
    save_low_precision("mistral", mistral, out_dir)


if __name__ == "__main__":
    sys.exit(main())
